"""Our side of the speed benchmark alone, for comparing two builds: the same history as
`speed.py` (N finished trials, D parameters), each binary run as 20 fresh processes of 25
suggestions (`sampler-speed HISTORY 25 --complete`, the first of each dropped), the
binaries interleaved process by process so that both see the same machine; prints the
10th percentile and the median per binary.

    .venv/bin/python bench/sampler/ab.py --n 1000 --d 5 OLD_BINARY NEW_BINARY
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+", help="sampler-speed binaries to compare")
    ap.add_argument("--n", type=int, default=1000, help="finished trials")
    ap.add_argument("--d", type=int, default=5, help="parameters")
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--evict-mb", type=int, default=0, help="passed on to sampler-speed")
    args = ap.parse_args()
    space, dists = speed.make_space(args.d)
    hist = speed.make_history(dists, args.n, seed=1000 * args.d + args.n)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(speed.history_json(space, hist), f)
    times = {b: [] for b in args.binaries}
    try:
        for _ in range(args.procs):
            for b in args.binaries:
                out = subprocess.run([b, f.name, str(args.reps), "--complete", "--evict-mb", str(args.evict_mb)],
                                     check=True, capture_output=True, text=True).stdout
                times[b].extend(json.loads(out)["times_s"][1:])
    finally:
        os.unlink(f.name)
    for b, t in times.items():
        t.sort()
        print(f"{b}: p10 {t[len(t) // 10] * 1e3:.3f} ms, median {statistics.median(t) * 1e3:.3f} ms ({len(t)} suggestions)")


if __name__ == "__main__":
    main()
