"""Quality benchmark: our TPE against Optuna 5.0.0's TPESampler, side by side.

    bash bench/sampler/quality.sh            # builds the Rust side, then runs this

For every test function (bench/sampler/functions.py), every seed and two modes
-- sequential, and 8 concurrent workers (8 trials always asked-but-untold, a
seeded random one told next, then a new one asked) -- both samplers run 100
trials with the same settings (multivariate, constant liar, 10 startup trials,
24 EI candidates). Our sampler runs in the `sampler-askd` binary (JSON lines
over stdin/stdout); Optuna runs in-process with in-memory storage.

Reported per function and mode: median best value, median area under the
best-so-far curve (mean of the curve over the 100 tells), Mann-Whitney U
p-values (two-sided, and one-sided for "ours worse"), and the mean rank.
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
import warnings
from multiprocessing import Pool

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from functions import FUNCTIONS  # noqa: E402

N_TRIALS = 100
N_WORKERS = 8
ASKD = None


def suggest(trial, name, d):
    if d["type"] == "float":
        return trial.suggest_float(name, d["low"], d["high"], log=d.get("log", False), step=d.get("step"))
    if d["type"] == "int":
        return trial.suggest_int(name, d["low"], d["high"], log=d.get("log", False), step=d.get("step", 1))
    return trial.suggest_categorical(name, d["choices"])


def simulate(ask, tell, fn, mode, seed):
    values = []
    if mode == "sequential":
        for _ in range(N_TRIALS):
            t, p = ask()
            v = fn(p)
            tell(t, v)
            values.append(v)
    else:
        rnd = random.Random(1_000_003 * seed + 17)  # same tell order for both samplers
        pending, asked = [], 0
        while asked < N_WORKERS:
            pending.append(ask())
            asked += 1
        while pending:
            t, p = pending.pop(rnd.randrange(len(pending)))
            v = fn(p)
            tell(t, v)
            values.append(v)
            if asked < N_TRIALS:
                pending.append(ask())
                asked += 1
    curve = np.minimum.accumulate(np.asarray(values, dtype=float))
    return float(curve[-1]), float(curve.mean())


def run_optuna(fname, mode, seed):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space, fn = FUNCTIONS[fname]
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                         n_startup_trials=10, n_ei_candidates=24)
    study = optuna.create_study(sampler=sampler)

    def ask():
        t = study.ask()
        return t, {n: suggest(t, n, d) for n, d in space.items()}

    return simulate(ask, lambda t, v: study.tell(t, v), fn, mode, seed)


class Ours:
    def __init__(self):
        self.p = subprocess.Popen([ASKD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def call(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply


_ours = None


def run_ours(fname, mode, seed):
    global _ours
    if _ours is None:
        _ours = Ours()
    space, fn = FUNCTIONS[fname]
    _ours.call({"cmd": "new", "space": space, "seed": seed, "direction": "minimize"})

    def ask():
        r = _ours.call({"cmd": "ask"})
        return r["number"], r["params"]

    return simulate(ask, lambda n, v: _ours.call({"cmd": "tell", "number": n, "value": v}), fn, mode, seed)


def task(args):
    impl, fname, mode, seed = args
    t0 = time.perf_counter()
    best, auc = (run_ours if impl == "ours" else run_optuna)(fname, mode, seed)
    return {"impl": impl, "function": fname, "mode": mode, "seed": seed, "best": best, "auc": auc,
            "seconds": time.perf_counter() - t0}


def init(askd):
    global ASKD
    ASKD = askd


def fmt(x):
    return f"{x:.4g}"


def summarize(rows):
    from scipy.stats import mannwhitneyu

    by = {}
    for r in rows:
        by.setdefault((r["function"], r["mode"], r["impl"]), []).append(r)
    lines = []
    ranks = []
    n_worse = n_better = 0
    min_p_worse = 1.0
    per_key = []
    n_seeds = len({r["seed"] for r in rows})
    for mode in ["sequential", "concurrent-8"]:
        if not any(r["mode"] == mode for r in rows):
            continue
        lines.append(f"\n**{mode}** ({n_seeds} seeds x {N_TRIALS} trials; lower is better)\n")
        lines.append("| function | median best ours | median best Optuna | median AUC ours | median AUC Optuna "
                     "| MWU p best (2-sided) | p ours worse (1-sided) | MWU p AUC (2-sided) | mean rank ours / Optuna |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for fname in FUNCTIONS:
            o = sorted(by.get((fname, mode, "ours"), []), key=lambda r: r["seed"])
            q = sorted(by.get((fname, mode, "optuna"), []), key=lambda r: r["seed"])
            if not o or not q:
                continue
            ob, qb = [r["best"] for r in o], [r["best"] for r in q]
            oa, qa = [r["auc"] for r in o], [r["auc"] for r in q]
            p2 = mannwhitneyu(ob, qb, alternative="two-sided").pvalue
            p_worse = mannwhitneyu(ob, qb, alternative="greater").pvalue
            pa = mannwhitneyu(oa, qa, alternative="two-sided").pvalue
            # Rank of each run among all runs of this function/mode, both samplers (1 = best).
            allv = np.array(ob + qb)
            order = allv.argsort(kind="stable")
            rk = np.empty(len(allv))
            rk[order] = np.arange(1, len(allv) + 1)
            for v in np.unique(allv):  # average ties
                m = allv == v
                rk[m] = rk[m].mean()
            r_ours, r_opt = rk[: len(ob)].mean(), rk[len(ob):].mean()
            ranks.append((r_ours, r_opt))
            min_p_worse = min(min_p_worse, p_worse)
            if p2 < 0.05:
                if np.median(ob) > np.median(qb) or r_ours > r_opt:
                    n_worse += 1
                else:
                    n_better += 1
            per_key.append({"function": fname, "mode": mode, "p_two_sided": p2, "p_ours_worse": p_worse,
                            "p_auc": pa, "rank_ours": r_ours, "rank_optuna": r_opt})
            lines.append(f"| {fname} | {fmt(np.median(ob))} | {fmt(np.median(qb))} | {fmt(np.median(oa))} | "
                         f"{fmt(np.median(qa))} | {p2:.3f} | {p_worse:.3f} | {pa:.3f} | {r_ours:.1f} / {r_opt:.1f} |")
    mr_o = float(np.mean([r[0] for r in ranks])) if ranks else float("nan")
    mr_q = float(np.mean([r[1] for r in ranks])) if ranks else float("nan")
    lines.append("")
    lines.append(f"Mean rank over all function/mode pairs (rank among the {2 * n_seeds} runs of a pair, 1 = best): "
                 f"**ours {mr_o:.2f}, Optuna {mr_q:.2f}**.")
    lines.append(f"Pairs significantly different at p < 0.05 (two-sided Mann-Whitney U on the best value): "
                 f"{n_worse} worse for us, {n_better} better for us, out of {len(per_key)}; "
                 f"smallest one-sided p for 'ours worse': {min_p_worse:.3f}.")
    return "\n".join(lines), {"mean_rank_ours": mr_o, "mean_rank_optuna": mr_q, "n_worse": n_worse,
                              "n_better": n_better, "pairs": per_key}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--askd", required=True, help="path to the sampler-askd binary")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--seed-offset", type=int, default=0, help="use seeds offset .. offset+seeds-1")
    ap.add_argument("--functions", default=",".join(FUNCTIONS))
    ap.add_argument("--modes", default="sequential,concurrent-8")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tasks = [(impl, f, m, s) for f in args.functions.split(",") for m in args.modes.split(",")
             for s in range(args.seed_offset, args.seed_offset + args.seeds) for impl in ("optuna", "ours")]
    # Longest (Optuna, high-dimensional) first for better packing.
    tasks.sort(key=lambda t: (t[0] != "optuna", -len(FUNCTIONS[t[1]][0])))
    rows = []
    t0 = time.time()
    with Pool(args.jobs, initializer=init, initargs=(args.askd,)) as pool:
        for i, r in enumerate(pool.imap_unordered(task, tasks, chunksize=4)):
            rows.append(r)
            if (i + 1) % 100 == 0 or i + 1 == len(tasks):
                print(f"{i + 1}/{len(tasks)} runs, {time.time() - t0:.0f}s", flush=True)
    with open(os.path.join(args.out, "quality_runs.json"), "w") as f:
        json.dump(rows, f)
    table, summary = summarize(rows)
    t_opt = sum(r["seconds"] for r in rows if r["impl"] == "optuna")
    t_ours = sum(r["seconds"] for r in rows if r["impl"] == "ours")
    table += (f"\n\nWall time {time.time() - t0:.0f} s on {args.jobs} processes; time inside the runs: "
              f"Optuna {t_opt:.0f} s, ours {t_ours:.0f} s (100-trial studies, ask+tell+objective).")
    with open(os.path.join(args.out, "quality.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "quality_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(table)


if __name__ == "__main__":
    main()
