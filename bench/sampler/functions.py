"""Test functions for the sampler quality benchmark (all minimised).

Each entry: name -> (space in our user format, objective taking a dict of
external parameter values). Standard functions use float parameters; the
"mixed" ones combine int, log-float, stepped-float and categorical parameters.
"""
import math

import numpy as np


def _floats(names, low, high):
    return {n: {"type": "float", "low": float(low), "high": float(high)} for n in names}


def _xs(p, d):
    return np.array([p[f"x{i}"] for i in range(d)], dtype=float)


def branin(p):
    x1, x2 = p["x0"], p["x1"]
    a, b, c = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann(x, A, P):
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(A * (x - P) ** 2, axis=1))))


def rosenbrock(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def ackley(x):
    d = len(x)
    return float(-20 * math.exp(-0.2 * math.sqrt(np.sum(x ** 2) / d))
                 - math.exp(np.sum(np.cos(2 * math.pi * x)) / d) + 20 + math.e)


def rastrigin(x):
    return float(10 * len(x) + np.sum(x ** 2 - 10 * np.cos(2 * math.pi * x)))


def styblinski_tang(x):
    return float(0.5 * np.sum(x ** 4 - 16 * x ** 2 + 5 * x))


def levy(x):
    w = 1 + (x - 1) / 4
    term1 = math.sin(math.pi * w[0]) ** 2
    term3 = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
    return float(term1 + mid + term3)


def _std(fn, d, low, high):
    names = [f"x{i}" for i in range(d)]
    return _floats(names, low, high), (lambda p: fn(_xs(p, d)))


def mixed_mlp(p):
    """A synthetic 'validation loss' of a small network: log-lr, int log units,
    int layers, stepped dropout, categorical optimizer and activation."""
    lr = math.log10(p["lr"])
    best_lr = {"adam": -3.0, "sgd": -1.5, "rmsprop": -3.5}[p["optimizer"]]
    loss = 0.3 * (lr - best_lr) ** 2
    loss += 0.4 * (math.log2(p["units"]) - 7.3) ** 2 / 4
    loss += 0.15 * abs(p["layers"] - 3)
    loss += 2.0 * (p["dropout"] - 0.25) ** 2
    loss += {"relu": 0.0, "tanh": 0.12, "sigmoid": 0.35}[p["activation"]]
    loss += {"adam": 0.0, "sgd": 0.05, "rmsprop": 0.08}[p["optimizer"]]
    return loss + 0.05


MIXED_MLP_SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "layers": {"type": "int", "low": 1, "high": 8},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
}


def mixed_int_cat(p):
    """Integer and categorical: a shifted quadratic over ints plus per-choice
    offsets that interact with one integer."""
    v = (p["a"] - 7) ** 2 + 0.5 * (p["b"] + 3) ** 2 + 0.1 * (p["c"] - 40) ** 2 / 10
    v += {"red": 0.0, "green": 3.0, "blue": 6.0, "yellow": 1.5}[p["color"]] * (1 + abs(p["a"] - 7) / 10)
    v += 0.0 if p["flag"] else 2.0
    return v + 1e-3 * math.log(p["scale"]) ** 2


MIXED_INT_CAT_SPACE = {
    "a": {"type": "int", "low": 0, "high": 20},
    "b": {"type": "int", "low": -10, "high": 10, "step": 2},
    "c": {"type": "int", "low": 1, "high": 100, "log": True},
    "color": {"type": "categorical", "choices": ["red", "green", "blue", "yellow"]},
    "flag": {"type": "categorical", "choices": [True, False]},
    "scale": {"type": "float", "low": 1e-3, "high": 1e3, "log": True},
}


def mixed_log_rastrigin(p):
    """Rastrigin in 4 log-scaled floats (optimum at 1.0) plus a categorical shift."""
    x = np.array([math.log10(p[f"l{i}"]) for i in range(4)])
    return rastrigin(x) + {"a": 0.0, "b": 1.0, "c": 2.0, "d": 4.0, "e": 8.0}[p["cat"]]


MIXED_LOG_RASTRIGIN_SPACE = dict(
    {f"l{i}": {"type": "float", "low": 1e-5, "high": 1e5, "log": True} for i in range(4)},
    cat={"type": "categorical", "choices": ["a", "b", "c", "d", "e"]},
)


FUNCTIONS = {
    "branin-2d": (_floats(["x0"], -5, 10) | _floats(["x1"], 0, 15), branin),
    "hartmann-3d": _std(lambda x: hartmann(x, _H3_A, _H3_P), 3, 0, 1),
    "hartmann-6d": _std(lambda x: hartmann(x, _H6_A, _H6_P), 6, 0, 1),
    "rosenbrock-2d": _std(rosenbrock, 2, -5, 10),
    "rosenbrock-6d": _std(rosenbrock, 6, -5, 10),
    "ackley-5d": _std(ackley, 5, -32.768, 32.768),
    "ackley-10d": _std(ackley, 10, -32.768, 32.768),
    "rastrigin-4d": _std(rastrigin, 4, -5.12, 5.12),
    "rastrigin-8d": _std(rastrigin, 8, -5.12, 5.12),
    "styblinski-tang-4d": _std(styblinski_tang, 4, -5, 5),
    "styblinski-tang-8d": _std(styblinski_tang, 8, -5, 5),
    "levy-4d": _std(levy, 4, -10, 10),
    "levy-10d": _std(levy, 10, -10, 10),
    "mixed-mlp-6d": (MIXED_MLP_SPACE, mixed_mlp),
    "mixed-int-cat-6d": (MIXED_INT_CAT_SPACE, mixed_int_cat),
    "mixed-log-rastrigin-5d": (MIXED_LOG_RASTRIGIN_SPACE, mixed_log_rastrigin),
}
