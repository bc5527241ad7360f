"""Why our suggestions in `speed.py` take longer than in a tight loop: our side alone, the
same history and the same rounds as `speed.py` (a warm-up call, then 7 rounds of 3 timed
suggestions, each told COMPLETE), with something different between the rounds:

- `back-to-back`: nothing (the next round is asked for at once);
- `sleep`: 50 ms of sleep in the driver, about as long as Optuna's round of 3 (our process
  waits on its pipe, as it does during Optuna's round, but nothing else runs);
- `sleep, keep-busy`: the same, with `sampler-speed --keep-busy` (a thread of ours spins
  without touching memory, so our process's CPU never idles);
- `sleep, warm-cache`: the same, with `sampler-speed --warm-cache` (the sampler cache's
  data is read before each round, untimed; the code is not run);
- `optuna`: Optuna's round of 3 suggestions, as in `speed.py`.

Each mode runs as fresh processes, interleaved with the other modes' (`--procs` each).
With `--pin`, the driver (and Optuna) run on CPU 0 and our process on CPU 1, so ours
never moves between CPUs and nothing else of the benchmark runs on its CPU. Prints and
writes (`--out`, markdown) our median by position in the round.

    .venv/bin/python bench/sampler/idle.py --bin BINARY [--n 1000 --d 5] [--procs 6] [--pin]
"""
import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402

MODES = ["back-to-back", "sleep", "sleep, keep-busy", "sleep, warm-cache", "optuna"]
ROUNDS, BLOCK, GAP_S = 7, 3, 0.05


def run_once(binary, space, history, mode, opt, pin):
    flags = {"sleep, keep-busy": ["--keep-busy"], "sleep, warm-cache": ["--warm-cache"]}.get(mode, [])
    ours = speed.OursSide(binary, space, history, "complete", flags=flags,
                          preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if pin else None)
    try:
        ours.time(1)  # warm-up, as in speed.py
        out = []
        for _ in range(ROUNDS):
            if mode == "optuna":
                for _ in range(BLOCK):
                    opt.time_one()
            elif mode != "back-to-back":
                time.sleep(GAP_S)
            out.append(ours.time(BLOCK))
        return out
    finally:
        ours.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="path to the sampler-speed binary")
    ap.add_argument("--n", type=int, default=1000, help="finished trials")
    ap.add_argument("--d", type=int, default=5, help="parameters")
    ap.add_argument("--procs", type=int, default=6, help="processes per mode")
    ap.add_argument("--pin", action="store_true", help="driver on CPU 0, our process on CPU 1")
    ap.add_argument("--out", default=None, help="markdown file for the table")
    args = ap.parse_args()
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
            raise SystemExit("--pin needs CPUs 0 and 1")
        os.sched_setaffinity(0, {0})
    speed.optuna.logging.set_verbosity(speed.optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space, dists = speed.make_space(args.d)
    history = speed.make_history(dists, args.n, seed=1000 * args.d + args.n)
    times = {m: [[] for _ in range(BLOCK)] for m in MODES}
    for i in range(args.procs):
        # A fresh Optuna study per round of processes (its history grows as ours does).
        opt = speed.OptunaSide(dists, history, "complete")
        opt.time_one()
        for k in range(len(MODES)):
            mode = MODES[(i + k) % len(MODES)]
            for rnd in run_once(args.bin, space, history, mode, opt, args.pin):
                for pos, t in enumerate(rnd):
                    times[mode][pos].append(t)
    lines = [f"{args.n:,} trials x {args.d} params, {args.procs} processes per mode, "
             f"{ROUNDS} rounds of {BLOCK} each{', pinned' if args.pin else ''}; "
             "our median suggestion time (ms)",
             "",
             "| between rounds | all | 1st of round | 2nd | 3rd |",
             "|---|---:|---:|---:|---:|"]
    for m in MODES:
        every = [t for pos in times[m] for t in pos]
        cells = [statistics.median(every)] + [statistics.median(pos) for pos in times[m]]
        lines.append(f"| {m} | " + " | ".join(f"{c * 1e3:.3f}" for c in cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
