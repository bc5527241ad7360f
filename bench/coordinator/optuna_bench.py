"""Optuna 5.0 RDBStorage on SQLite, driven by N processes: ask+tell cycles.

The same study shape as `coordinator-bench`: RandomSampler, three parameters
(float x in [-10, 10], int y in [-10, 10], categorical c in {a, b, c}), the
trivial objective x^2 + y^2 + [c == "b"], minimised. Each process loads the
study and runs ask -> suggest -> tell in a loop until the deadline. At the end
the database is checked: every COMPLETE trial has a value and a unique number.
Prints one JSON line.
"""

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time

import optuna


def objective(trial):
    x = trial.suggest_float("x", -10.0, 10.0)
    y = trial.suggest_int("y", -10, 10)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    return x * x + y * y + (1.0 if c == "b" else 0.0)


def storage(url):
    # A generous SQLite lock timeout: 8 writers contend for one file.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def worker(url, name, seed, seconds, barrier, out):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage(url), sampler=optuna.samplers.RandomSampler(seed=seed))
    barrier.wait()  # every process has imported Optuna and loaded the study
    deadline = time.time() + seconds
    asks, tells, errors, n = [], [], 0, 0
    while time.time() < deadline:
        try:
            t0 = time.perf_counter()
            trial = study.ask()
            asks.append(time.perf_counter() - t0)
            value = objective(trial)
            t1 = time.perf_counter()
            study.tell(trial, value)
            tells.append(time.perf_counter() - t1)
            n += 1
        except Exception as e:  # "database is locked" and friends
            errors += 1
            print(f"optuna worker error: {e!r}", file=sys.stderr)
    out.put((n, asks, tells, errors, time.time()))


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))] * 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    path = args.db or os.path.join(tempfile.mkdtemp(prefix="optuna-bench-"), "optuna.db")
    url = f"sqlite:///{path}"
    name = "bench"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=name, storage=storage(url), direction="minimize")

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.processes + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(url, name, args.seed + i, args.seconds, barrier, out))
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.time()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = max(r[4] for r in results) - start

    cycles = sum(r[0] for r in results)
    asks = [a for r in results for a in r[1]]
    tells = [t for r in results for t in r[2]]
    errors = sum(r[3] for r in results)

    con = sqlite3.connect(path)
    rows, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT number) FROM trials").fetchone()
    complete = con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    values = con.execute("SELECT COUNT(*) FROM trial_values").fetchone()[0]
    con.close()

    print(json.dumps({
        "impl": "optuna-rdb-sqlite",
        "optuna": optuna.__version__,
        "sampler": "random",
        "processes": args.processes,
        "seconds": elapsed,
        "cycles": cycles,
        "cycles_per_s": cycles / elapsed,
        "ask_p50_ms": pct(asks, 0.5),
        "ask_p99_ms": pct(asks, 0.99),
        "tell_p50_ms": pct(tells, 0.5),
        "tell_p99_ms": pct(tells, 0.99),
        "errors": errors,
        "db_trials": rows,
        "db_distinct_numbers": distinct,
        "db_complete": complete,
        "db_values": values,
    }))


if __name__ == "__main__":
    main()
