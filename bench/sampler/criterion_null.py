"""How often does the quality acceptance criterion pass between two EQUAL samplers?

    .venv/bin/python bench/sampler/criterion_null.py RUNS.json[.gz] [...] [--block 30]

    # the committed runs: seeds 0-29 (the table) and 8000-8239 (240 fresh seeds)
    .venv/bin/python bench/sampler/criterion_null.py bench/sampler/results/quality_runs.json \
        bench/sampler/results/quality_runs_seeds8000-8239.json.gz

The issue's criterion, evaluated the way `quality.py` reports it, on one block of
seeds: "no function/mode pair is significantly worse for A than for B
(two-sided Mann-Whitney U on the best value, p < 0.05, direction from the
medians or mean ranks), and A's mean rank over all pairs is at least as good
as B's".

Reads the per-run files `quality.py` writes (`quality_runs.json`), cuts the
seeds into disjoint blocks of `--block` consecutive seeds, and evaluates the
criterion for:

- Optuna block i against Optuna block j (i != j, both orders): Optuna against
  itself, so any failure here is the test's own false alarm rate;
- ours block i against ours block j: the same for our sampler;
- ours block i against Optuna block i (the same seeds, as the benchmark
  compares them), and against every other Optuna block.

It also prints the spread of "mean rank of A minus neutral" across block
pairs, next to the standard error it would have if the 32 pairs were
independent, because the same seed drives every function (so the pairs are
correlated and the 32-pair mean moves more than independence suggests).
"""
import argparse
import gzip
import itertools
import json
import math
import sys

import numpy as np
from scipy.stats import mannwhitneyu


def load(paths):
    rows = []
    for p in paths:
        with (gzip.open(p, "rt") if p.endswith(".gz") else open(p)) as f:
            rows.extend(json.load(f))
    # (impl, function, mode) -> {seed: best}
    by = {}
    for r in rows:
        by.setdefault((r["impl"], r["function"], r["mode"]), {})[r["seed"]] = r["best"]
    return by


def ranks(a, b):
    allv = np.array(a + b)
    order = allv.argsort(kind="stable")
    rk = np.empty(len(allv))
    rk[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):
        m = allv == v
        rk[m] = rk[m].mean()
    return rk[: len(a)].mean(), rk[len(a):].mean()


def criterion(by, impl_a, seeds_a, impl_b, seeds_b, keys):
    """Returns (passes, n_worse, n_better, mean_rank_a, mean_rank_b)."""
    n_worse = n_better = 0
    ra_all, rb_all = [], []
    for fname, mode in keys:
        a = [by[(impl_a, fname, mode)][s] for s in seeds_a]
        b = [by[(impl_b, fname, mode)][s] for s in seeds_b]
        p2 = mannwhitneyu(a, b, alternative="two-sided").pvalue
        ra, rb = ranks(a, b)
        ra_all.append(ra)
        rb_all.append(rb)
        if p2 < 0.05:
            if np.median(a) > np.median(b) or ra > rb:
                n_worse += 1
            else:
                n_better += 1
    mra, mrb = float(np.mean(ra_all)), float(np.mean(rb_all))
    return n_worse == 0 and mra <= mrb, n_worse, n_better, mra, mrb


def report(label, results, block):
    neutral = block + 0.5
    n = len(results)
    passes = sum(r[0] for r in results)
    worse = [r[1] for r in results]
    dev = np.array([r[3] - neutral for r in results])
    print(f"{label}: {n} comparisons; criterion passes {passes} ({passes / n:.0%}); "
          f"'A worse' pairs per comparison: mean {np.mean(worse):.2f}, "
          f"distribution {dict(sorted((k, worse.count(k)) for k in set(worse)))}; "
          f"A's mean rank minus neutral: sd {dev.std(ddof=1):.2f}, range {dev.min():+.2f} .. {dev.max():+.2f}")
    return passes, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="quality_runs.json files written by quality.py")
    ap.add_argument("--block", type=int, default=30, help="seeds per block (the benchmark uses 30)")
    args = ap.parse_args()
    by = load(args.runs)
    keys = sorted({(f, m) for (_, f, m) in by})
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    if len(seeds) < 2 * args.block:
        sys.exit(f"error: need at least {2 * args.block} seeds present for every run kind, found {len(seeds)}")
    blocks = [seeds[i:i + args.block] for i in range(0, len(seeds) - args.block + 1, args.block)]
    n_pairs = len(keys)
    se_indep = math.sqrt(args.block * args.block * (2 * args.block + 1) / 12) / args.block / math.sqrt(n_pairs)
    print(f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) in {len(blocks)} blocks of {args.block}; "
          f"{n_pairs} function/mode pairs; independent-pairs standard error of a mean rank: {se_indep:.2f}")
    print(f"P(pass) for equal samplers if pairs were independent: "
          f"{0.975 ** n_pairs:.2f} (no pair worse) x 0.5 (mean rank) = {0.975 ** n_pairs * 0.5:.2f}")
    out = {}
    for label, ia, ib, cross in [
        ("Optuna vs Optuna (disjoint blocks)", "optuna", "optuna", True),
        ("ours vs ours (disjoint blocks)", "ours", "ours", True),
        ("ours vs Optuna (same seeds)", "ours", "optuna", False),
        ("ours vs Optuna (disjoint blocks)", "ours", "optuna", True),
    ]:
        if cross:
            pairs = [(a, b) for a, b in itertools.permutations(range(len(blocks)), 2)]
        else:
            pairs = [(a, a) for a in range(len(blocks))]
        res = [criterion(by, ia, blocks[a], ib, blocks[b], keys) for a, b in pairs]
        out[label] = report(label, res, args.block)
        if not cross:
            for (a, _), r in zip(pairs, res):
                print(f"  seeds {blocks[a][0]}-{blocks[a][-1]}: {'pass' if r[0] else 'FAIL'}, "
                      f"{r[1]} worse / {r[2]} better, mean rank {r[3]:.2f} / {r[4]:.2f}")


if __name__ == "__main__":
    main()
