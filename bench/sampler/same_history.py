"""Diagnostic: on one fixed history (complete + running trials), draw many
suggestions from our TPE and from Optuna's TPESampler (one per seed) and compare
their distributions per parameter (Kolmogorov-Smirnov) and the objective value
of the suggestions (Mann-Whitney U). Equal distributions on fixed histories mean
the two samplers take the same step; differences in the quality benchmark are
then noise.

    .venv/bin/python bench/sampler/same_history.py --askd PATH FUNCTION N_COMPLETE N_RUNNING REPS
    e.g. ... mixed-int-cat-6d 40 7 300
    (--history-sampler tpe: the history is Optuna TPE's own run, an optimised one)
"""
import argparse
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import optuna
from scipy.stats import ks_2samp, mannwhitneyu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from functions import FUNCTIONS  # noqa: E402
from quality import suggest  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--askd", required=True)
    ap.add_argument("function")
    ap.add_argument("n_complete", type=int)
    ap.add_argument("n_running", type=int)
    ap.add_argument("reps", type=int)
    ap.add_argument("--history-sampler", default="random", choices=["random", "tpe"],
                    help="how the fixed history is drawn: random parameters, or Optuna's own TPE "
                         "(an optimised history, its 'below' clustered)")
    ap.add_argument("--history-seed", type=int, default=5)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space, fn = FUNCTIONS[a.function]
    # The fixed history: random parameters, the first n_complete told.
    if a.history_sampler == "tpe":
        hs = optuna.samplers.TPESampler(seed=a.history_seed, multivariate=True, constant_liar=True)
    else:
        hs = optuna.samplers.RandomSampler(seed=a.history_seed)
    st = optuna.create_study(sampler=hs)
    hist = []
    for i in range(a.n_complete + a.n_running):
        t = st.ask()
        p = {n: suggest(t, n, d) for n, d in space.items()}
        v = fn(p) if i < a.n_complete else None
        if v is not None:
            st.tell(t, v)
        hist.append((v, dict(t.params), dict(t.distributions)))
    state = {True: optuna.trial.TrialState.COMPLETE, False: optuna.trial.TrialState.RUNNING}
    study = optuna.create_study()
    for v, params, dists in hist:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=v, state=state[v is not None]))
    theirs = []
    for r in range(a.reps):
        study.sampler = optuna.samplers.TPESampler(seed=r, multivariate=True, constant_liar=True)
        t = study.ask()
        p = {n: suggest(t, n, d) for n, d in space.items()}
        theirs.append({n: t.distributions[n].to_internal_repr(p[n]) for n in space})
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    proc = subprocess.Popen([a.askd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(req):
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    call({"cmd": "new", "space": space, "seed": 0})
    for v, params, dists in hist:
        call({"cmd": "add", "state": "complete" if v is not None else "running",
              "params": {n: dists[n].to_internal_repr(params[n]) for n in space}, "value": v})
    ours = [call({"cmd": "peek", "seed": r})["params"] for r in range(a.reps)]

    def external(p):
        out = {}
        for n, d in space.items():
            x = p[n]
            out[n] = d["choices"][int(x)] if d["type"] == "categorical" else (int(x) if d["type"] == "int" else x)
        return out

    print(f"{a.function}: {a.n_complete} complete + {a.n_running} running trials, {a.reps} suggestions each")
    for n in space:
        o = np.array([p[n] for p in ours])
        q = np.array([p[n] for p in theirs])
        print(f"  {n:12s} ours mean {o.mean():10.4g} sd {o.std():9.4g} | Optuna mean {q.mean():10.4g} "
              f"sd {q.std():9.4g} | KS p {ks_2samp(o, q).pvalue:.3f}")
    fo = [fn(external(p)) for p in ours]
    fq = [fn(external(p)) for p in theirs]
    print(f"  objective at the suggestion: median ours {np.median(fo):.4g}, Optuna {np.median(fq):.4g}, "
          f"MWU p {mannwhitneyu(fo, fq).pvalue:.3f}")


if __name__ == "__main__":
    main()
