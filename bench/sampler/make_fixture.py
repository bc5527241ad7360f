"""Writes coordinator/sampler/tests/fixtures/optuna_reference.json: exact numbers
from the installed Optuna 5.0.0 that the Rust tests compare against.

    .venv/bin/python bench/sampler/make_fixture.py

Contents: distribution_json strings, truncated-normal helpers, Parzen estimator
kernels and log densities, and pruner decisions replayed on hand-built,
interleaved (out-of-order) histories.
"""
import json
import math
import os
import random
import warnings

import numpy as np
import optuna
from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                  IntDistribution, distribution_to_json)
from optuna.samplers._tpe import _truncnorm
from optuna.samplers._tpe.parzen_estimator import (_ParzenEstimator,
                                                   _ParzenEstimatorParameters)
from optuna.samplers._tpe.probability_distributions import \
    _BatchedCategoricalDistributions
from optuna.samplers._tpe.sampler import default_weights

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)
assert optuna.__version__ == "5.0.0", optuna.__version__

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "coordinator", "sampler",
                   "tests", "fixtures", "optuna_reference.json")


def user(d):
    """Our user-format JSON of an Optuna distribution."""
    if isinstance(d, FloatDistribution):
        return {"type": "float", "low": d.low, "high": d.high, "log": d.log, "step": d.step}
    if isinstance(d, IntDistribution):
        return {"type": "int", "low": d.low, "high": d.high, "log": d.log, "step": d.step}
    return {"type": "categorical", "choices": list(d.choices)}


dists = [
    FloatDistribution(1e-5, 0.1, log=True),
    FloatDistribution(0.0, 1.0),
    FloatDistribution(-5.0, 5.0, step=0.5),
    FloatDistribution(0.0001, 123456.789),
    FloatDistribution(1e-20, 1e20, log=True),
    FloatDistribution(-0.3, 0.3, step=0.1),
    IntDistribution(1, 1024, log=True),
    IntDistribution(0, 10),
    IntDistribution(-8, 64, step=8),
    CategoricalDistribution(["adam", "sgd", "rmsprop"]),
    CategoricalDistribution([32, 64, 128]),
    CategoricalDistribution([0.5, 1.0, 2.5e-7]),
    CategoricalDistribution([True, False, None, "é\"x", 3, 1.5]),
]
distribution_json = [{"user": user(d), "json": distribution_to_json(d)} for d in dists]

# Truncated normal helpers.
rs = np.random.RandomState(0)
tn = []
for a, b in [(-1.0, 1.0), (-30.0, -25.0), (25.0, 40.0), (-3.0, 0.5), (0.1, 0.2), (-50.0, 50.0),
             (-0.5, 8.0), (-25.0, 3.0)]:
    for q in [1e-9, 0.01, 0.3, 0.5, 0.9, 0.999999]:
        x = float(_truncnorm.ppf(np.array([q]), a, b)[0])
        tn.append({"a": a, "b": b, "q": q, "ppf": x,
                   "log_gauss_mass": float(_truncnorm._log_gauss_mass(np.array([a]), np.array([b]))[0]),
                   "logpdf": float(_truncnorm.logpdf(np.array([(a + b) / 2 * 1.3 + 0.2]), a, b, 0.7, 1.9)[0]),
                   "logpdf_x": (a + b) / 2 * 1.3 + 0.2})
log_ndtr = [{"x": x, "y": float(_truncnorm._log_ndtr(np.array([x]))[0])}
            for x in [-100.0, -38.0, -20.5, -20.0, -5.0, -1.0, 0.0, 0.7, 5.9, 6.1, 12.0]]

# Parzen estimators. numpy's default argsort is not stable, so which of two tied
# observations gets which bandwidth depends on numpy's sort kernel; we record the
# estimator with a stable argsort (ties in trial order), which is what we do.
import types

from optuna.samplers._tpe import parzen_estimator as _pe_module

_stable_np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
_stable_np.argsort = lambda a, *args, **kw: np.argsort(a, kind="stable")
_pe_module.np = _stable_np
params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True,
                                    consider_endpoints=False, weights=default_weights,
                                    multivariate=True)
parzen = []
space_all = {
    "lr": FloatDistribution(1e-5, 0.1, log=True),
    "x": FloatDistribution(-5.0, 10.0),
    "q": FloatDistribution(-1.0, 1.0, step=0.25),
    "units": IntDistribution(16, 512, log=True),
    "layers": IntDistribution(1, 8),
    "bs": IntDistribution(32, 256, step=32),
    "opt": CategoricalDistribution(["adam", "sgd", "rmsprop"]),
}
for n_obs in [0, 1, 2, 5, 30, 60]:
    rng = np.random.RandomState(n_obs + 7)
    sampler = optuna.samplers.RandomSampler(seed=n_obs)
    obs = {}
    for name, d in space_all.items():
        vals = []
        for _ in range(n_obs):
            if isinstance(d, CategoricalDistribution):
                vals.append(float(rng.randint(len(d.choices))))
            elif isinstance(d, FloatDistribution):
                if d.log:
                    v = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
                elif d.step:
                    v = d.low + d.step * rng.randint(int(round((d.high - d.low) / d.step)) + 1)
                else:
                    v = rng.uniform(d.low, d.high)
                vals.append(float(v))
            else:
                if d.log:
                    v = int(round(math.exp(rng.uniform(math.log(d.low), math.log(d.high)))))
                else:
                    v = d.low + d.step * rng.randint((d.high - d.low) // d.step + 1)
                vals.append(float(v))
        if n_obs == 30:  # ties
            vals[3] = vals[4]
        obs[name] = np.asarray(vals)
    pe = _ParzenEstimator(obs, space_all, params)
    mix = pe._mixture_distribution
    kernels = {}
    for name, d in zip(space_all, mix.distributions):
        if isinstance(d, _BatchedCategoricalDistributions):
            kernels[name] = {"weights": d.weights.tolist()}
        else:
            kernels[name] = {"mu": d.mu.tolist(), "sigma": d.sigma.tolist()}
    pts = pe.sample(np.random.RandomState(1), 16)
    lp = pe.log_pdf(pts)
    parzen.append({
        "space": {k: user(v) for k, v in space_all.items()},
        "observations": {k: v.tolist() for k, v in obs.items()},
        "weights": mix.weights.tolist(),
        "kernels": kernels,
        "points": {k: v.tolist() for k, v in pts.items()},
        "log_pdf": lp.tolist(),
    })


# Pruner decisions on interleaved histories.
def replay(pruner, direction, n_trials, n_steps, n_workers, seed, study_name="fixture-study",
           nan_at=None, jumps=(0, 0, 0, 1)):
    rnd = random.Random(seed)
    study = optuna.create_study(direction=direction, pruner=pruner, study_name=study_name)
    events = []
    active = {}  # number -> (trial, next_step, quality, max_step)
    asked = 0

    def ask():
        nonlocal asked
        t = study.ask()
        asked += 1
        quality = rnd.uniform(0, 1)
        active[t.number] = [t, 0, quality, rnd.choice([n_steps, n_steps, n_steps // 2 + 1])]
        events.append({"ask": t.number})

    while asked < n_trials and len(active) < n_workers:
        ask()
    while active:
        number = rnd.choice(sorted(active))
        t, step, quality, max_step = active[number]
        # A report may skip steps (steps need not be consecutive; with larger
        # `jumps` one report can pass several rungs at once).
        step += rnd.choice(list(jumps))
        value = quality + 1.0 / (1 + step) + rnd.gauss(0, 0.05)
        if direction == "maximize":
            value = -value
        if nan_at is not None and number % nan_at == 3 and step == 2:
            value = float("nan")
        t.report(value, step)
        decision = t.should_prune()
        event = {"report": number, "step": step, "value": value, "prune": bool(decision)}
        # The rung values successive halving stored on the trial (system attributes).
        attrs = study._storage.get_trial(t._trial_id).system_attrs
        rungs = {k[len("completed_rung_"):]: v for k, v in attrs.items() if k.startswith("completed_rung_")}
        if rungs:
            event["rungs"] = rungs
        events.append(event)
        if decision:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            events.append({"tell": number, "state": "pruned"})
            del active[number]
        elif step + 1 >= max_step:
            study.tell(t, value)
            events.append({"tell": number, "state": "complete", "value": value})
            del active[number]
        else:
            active[number][1] = step + 1
        if asked < n_trials and len(active) < n_workers:
            ask()
    return events


pruners = []
cases = [
    ({"name": "median"}, lambda: optuna.pruners.MedianPruner(), "minimize", 40, 12, 4, 1),
    ({"name": "median", "n_startup_trials": 3, "n_warmup_steps": 2, "interval_steps": 3, "n_min_trials": 2},
     lambda: optuna.pruners.MedianPruner(3, 2, 3, n_min_trials=2), "maximize", 40, 12, 6, 2),
    ({"name": "percentile", "percentile": 25.0, "n_startup_trials": 2},
     lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=2), "minimize", 30, 10, 3, 3),
    ({"name": "successive_halving", "min_resource": 1, "reduction_factor": 4},
     lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4), "minimize", 60, 20, 8, 4),
    ({"name": "successive_halving", "min_resource": 2, "reduction_factor": 2, "min_early_stopping_rate": 1},
     lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2, min_early_stopping_rate=1),
     "maximize", 50, 20, 5, 5),
    ({"name": "successive_halving", "min_resource": 1, "reduction_factor": 3, "bootstrap_count": 2},
     lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, bootstrap_count=2),
     "minimize", 30, 12, 4, 6),
    ({"name": "hyperband", "min_resource": 1, "max_resource": 27, "reduction_factor": 3, "study_name": "fixture-study"},
     lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3),
     "minimize", 80, 27, 8, 7),
    ({"name": "median", "n_startup_trials": 2},
     lambda: optuna.pruners.MedianPruner(n_startup_trials=2), "minimize", 20, 8, 3, 8),
]
# Sparse reports: one report may pass several rungs (a trial pruned at a low rung
# must not count at the higher rungs its report also passed); and "auto"
# resources, which Optuna fixes at its first estimate while later trials run longer
# (seed 13: the first trial to complete stops at step 50, so Hyperband fixes 4
# brackets where the longest trials, 108 steps, would give 5).
sparse = [
    ({"name": "successive_halving", "min_resource": 1, "reduction_factor": 2},
     lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2), "minimize",
     60, 40, 6, 9, (0, 1, 3, 7)),
    ({"name": "successive_halving"},
     lambda: optuna.pruners.SuccessiveHalvingPruner(), "maximize", 40, 420, 5, 10, (1, 9, 30, 61)),
    ({"name": "hyperband", "min_resource": 1, "max_resource": 40, "reduction_factor": 3,
      "study_name": "fixture-study"},
     lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=40, reduction_factor=3),
     "minimize", 80, 40, 8, 11, (0, 1, 2, 8)),
    ({"name": "hyperband", "study_name": "fixture-study"},
     lambda: optuna.pruners.HyperbandPruner(), "minimize", 80, 100, 8, 13, (0, 1, 4, 13)),
]
for cfg, make, direction, n_trials, n_steps, n_workers, seed in cases:
    nan_at = 5 if seed in (1, 4, 8) else None
    pruners.append({"config": cfg, "direction": direction,
                    "events": replay(make(), direction, n_trials, n_steps, n_workers, seed,
                                     nan_at=nan_at)})
for cfg, make, direction, n_trials, n_steps, n_workers, seed, jumps in sparse:
    pruners.append({"config": cfg, "direction": direction,
                    "events": replay(make(), direction, n_trials, n_steps, n_workers, seed,
                                     jumps=jumps)})

data = {
    "optuna_version": optuna.__version__,
    "distribution_json": distribution_json,
    "truncnorm": tn,
    "log_ndtr": log_ndtr,
    "parzen": parzen,
    "pruners": pruners,
}


def finite_only(x):
    """JSON has no NaN/inf: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: finite_only(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_only(v) for v in x]
    return x


with open(OUT, "w") as f:
    json.dump(finite_only(data), f, allow_nan=False)
print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")
