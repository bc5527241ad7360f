"""Speed benchmark: time to suggest one trial with our TPE and with Optuna
5.0.0's TPESampler (same settings: multivariate, constant liar, 10 startup
trials, 24 EI candidates) after N finished trials, N = 100, 1000, 10000, with 5
and 20 parameters (a mix of float, log-float, int, categorical and stepped
float). Both sides get the same history in the same run.

    bash bench/sampler/speed.sh

Optuna: in-memory storage, history added with `study.add_trials` /
`optuna.trial.create_trial`; the timed part is `study.ask()` plus the
`suggest_*` calls of every parameter. Ours: the `sampler-speed` binary loads the
same history and times `TpeSampler::sample_with` with the study's cache, as the
coordinator calls it (the full suggestion, syncing the cache included). On both
sides each suggested trial is then told COMPLETE with the same made-up objective
(sum of sin(0.37 x) over its internal values), so every suggestion sees a
history one trial longer than the last, as in a study (`--tell fail` tells it
FAIL instead, which TPE ignores). Rounds alternate between the two
sides (three Optuna suggestions, then three of ours) so both see the same load;
the table gives the ratio of the medians, and of the fastest times.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

KINDS = ["float", "logfloat", "int", "cat", "stepfloat"]
CHOICES = ["a", "b", "c", "d"]


def make_space(d):
    space, dists = {}, {}
    for i in range(d):
        kind = KINDS[i % len(KINDS)]
        name = f"p{i:02d}_{kind}"
        if kind == "float":
            space[name] = {"type": "float", "low": -5.0, "high": 5.0}
            dists[name] = FloatDistribution(-5.0, 5.0)
        elif kind == "logfloat":
            space[name] = {"type": "float", "low": 1e-4, "high": 1.0, "log": True}
            dists[name] = FloatDistribution(1e-4, 1.0, log=True)
        elif kind == "int":
            space[name] = {"type": "int", "low": 0, "high": 100}
            dists[name] = IntDistribution(0, 100)
        elif kind == "cat":
            space[name] = {"type": "categorical", "choices": CHOICES}
            dists[name] = CategoricalDistribution(CHOICES)
        else:
            space[name] = {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1}
            dists[name] = FloatDistribution(0.0, 1.0, step=0.1)
    return space, dists


def make_history(dists, n, seed):
    rs = np.random.RandomState(seed)
    trials = []
    for number in range(n):
        ext, internal, v = {}, {}, 0.0
        for name, d in dists.items():
            if isinstance(d, CategoricalDistribution):
                idx = int(rs.randint(len(d.choices)))
                ext[name], internal[name] = d.choices[idx], float(idx)
                v += 0.3 * idx
            elif isinstance(d, IntDistribution):
                x = int(rs.randint(d.low, d.high + 1))
                ext[name], internal[name] = x, float(x)
                v += ((x - 30) / 50.0) ** 2
            elif d.log:
                x = math.exp(rs.uniform(math.log(d.low), math.log(d.high)))
                ext[name], internal[name] = x, x
                v += (math.log10(x) + 2) ** 2 / 4
            elif d.step is not None:
                x = round(float(d.low + d.step * rs.randint(11)), 10)
                ext[name], internal[name] = x, x
                v += (x - 0.7) ** 2
            else:
                x = float(rs.uniform(d.low, d.high))
                ext[name], internal[name] = x, x
                v += (x - 1.0) ** 2 / 10
        v += rs.normal(0, 0.01)
        trials.append((ext, internal, v))
    return trials


class OptunaSide:
    """An Optuna study holding the history; `time_one()` times one suggestion."""

    def __init__(self, dists, history, tell):
        sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True,
                                             n_startup_trials=10, n_ei_candidates=24)
        self.dists = dists
        self.tell = tell
        self.study = optuna.create_study(sampler=sampler)
        self.study.add_trials([optuna.trial.create_trial(params=ext, distributions=dists, value=v)
                               for ext, _, v in history])

    def time_one(self):
        t0 = time.perf_counter()
        trial = self.study.ask()
        for name, d in self.dists.items():
            if isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(name, d.choices)
            elif isinstance(d, IntDistribution):
                trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)
            else:
                trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
        dt = time.perf_counter() - t0
        if self.tell == "complete":
            internal = [self.dists[n].to_internal_repr(v) for n, v in trial.params.items()]
            self.study.tell(trial, sum(math.sin(0.37 * x) for x in internal))
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # ignored by TPE afterwards
        return dt


def history_json(space, history):
    """The history as the `sampler-speed` binary reads it (internal values)."""
    return {"space": space, "trials": [{"number": i, "params": internal, "value": v}
                                       for i, (_, internal, v) in enumerate(history)]}


class OursSide:
    """The `sampler-speed` binary serving the same history; `time(k)` times k suggestions.
    `flags`: more `sampler-speed` flags; `preexec_fn`: run in the child before it starts."""

    def __init__(self, binary, space, history, tell, flags=(), preexec_fn=None):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(history_json(space, history), f)
        f.close()
        self.path = f.name
        extra = ["--complete"] if tell == "complete" else []
        self.p = subprocess.Popen([binary, self.path, "serve", *extra, *flags], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, preexec_fn=preexec_fn)

    def time(self, k):
        self.p.stdin.write(f"{k}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"{self.p.args[0]} exited early (status {self.p.wait()})")
        return json.loads(line)["times_s"]

    def close(self):
        self.p.stdin.close()
        self.p.wait()
        os.unlink(self.path)


def fmt_t(s):
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the sampler-speed binary")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--dims", default="5,20")
    ap.add_argument("--tell", choices=["complete", "fail"], default="complete",
                    help="how each timed suggestion is told afterwards (complete: the history grows)")
    ap.add_argument("--block", type=int, default=3,
                    help="suggestions per side per round (rounds alternate between the sides)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = []
    for d in map(int, args.dims.split(",")):
        space, dists = make_space(d)
        for n in map(int, args.sizes.split(",")):
            history = make_history(dists, n, seed=1000 * d + n)
            opt, ours = OptunaSide(dists, history, args.tell), OursSide(args.bin, space, history, args.tell)
            # Interleaved rounds, so that both sides see the same machine load.
            rounds = 7 if n <= 1000 else 3
            t_opt, t_ours = [], []
            opt.time_one()  # warm-up, both sides
            ours.time(1)
            for _ in range(rounds):
                t_opt.extend(opt.time_one() for _ in range(args.block))
                t_ours.extend(ours.time(args.block))
            ours.close()
            m_opt, m_ours = statistics.median(t_opt), statistics.median(t_ours)
            # Our i-th suggestion of each round follows Optuna's round (i = 0: coldest caches).
            by_pos = [statistics.median(t_ours[i::args.block]) for i in range(args.block)]
            rows.append({"n_trials": n, "n_params": d, "optuna_median_s": m_opt, "ours_median_s": m_ours,
                         "ratio": m_opt / m_ours, "optuna_min_s": min(t_opt), "ours_min_s": min(t_ours),
                         "ratio_of_min": min(t_opt) / min(t_ours),
                         "optuna_reps": len(t_opt), "ours_reps": len(t_ours),
                         "ours_median_by_position_in_round_s": by_pos})
            print(f"n={n:>5} d={d:>2}: Optuna {fmt_t(m_opt)}, ours {fmt_t(m_ours)}, "
                  f"{m_opt / m_ours:.0f}x (min: {min(t_opt) / min(t_ours):.0f}x); ours by position in round: "
                  + ", ".join(fmt_t(t) for t in by_pos), flush=True)
    lines = ["| finished trials | params | Optuna TPESampler (median) | ours (median) | speed-up (medians) "
             "| speed-up (fastest of each) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n_trials']:,} | {r['n_params']} | {fmt_t(r['optuna_median_s'])} | "
                     f"{fmt_t(r['ours_median_s'])} | **{r['ratio']:.0f}×** | {r['ratio_of_min']:.0f}× |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump({"machine": platform.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
