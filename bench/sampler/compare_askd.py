"""Output-identity check between two builds of `sampler-askd` (e.g. before and after a
speed change): whole studies (sequential and 8 concurrent workers, told in a seeded
random order, 10% failures; minimise and maximise; a mixed and a continuous space)
are driven through both, and every reply must be the same text (serde_json prints
floats exactly, so equal text means equal bits).

    .venv/bin/python bench/sampler/compare_askd.py OLD_ASKD NEW_ASKD [SEEDS] [TRIALS]

With `--near` (after the positional arguments) the replies may differ in rounding: each
study reports how many asks are identical and the largest relative difference of any
parameter (a categorical counts 1 when it differs), and the check fails if that is above
1e-9 (a change meant to alter only rounding, e.g. another `exp`).

Build the old one from a snapshot, e.g.
`git archive <commit> | tar -x -C /tmp/old && cd /tmp/old &&
CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p mnist-sampler --bin sampler-askd`.
"""
import json, math, random, subprocess, sys
OLD, NEW = sys.argv[1], sys.argv[2]
spaces = {
 "mixed": {"x": {"type": "float", "low": -5.0, "high": 5.0}, "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
           "n": {"type": "int", "low": 0, "high": 100}, "opt": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
           "d": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1}, "w": {"type": "int", "low": 1, "high": 1024, "log": True}},
 "cont": {f"x{i}": {"type": "float", "low": -3.0, "high": 3.0} for i in range(4)},
}
def f(p):
    v = 0.0
    for k, x in p.items():
        if isinstance(x, str): v += {"adam": 0, "sgd": 0.5, "rmsprop": 0.2}[x]
        elif k == "lr": v += (math.log10(x) + 3) ** 2
        elif k == "w": v += (math.log2(x) - 6) ** 2 / 10
        elif k == "n": v += ((x - 30) / 40) ** 2
        else: v += (x - 0.7) ** 2 + 0.3 * math.sin(5 * x)
    return v
def run(binary, space, seed, n, conc, direction):
    p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    def req(o):
        p.stdin.write(json.dumps(o) + "\n"); p.stdin.flush(); return p.stdout.readline()
    out = [req({"cmd": "new", "space": space, "seed": seed, "direction": direction})]
    rng = random.Random(seed); running = []
    for i in range(n):
        r = req({"cmd": "ask"}); out.append(r); d = json.loads(r); running.append(d)
        while len(running) >= conc or (i == n - 1 and running):
            t = running.pop(rng.randrange(len(running)))
            v = f(t["params"])
            msg = {"cmd": "tell", "number": t["number"], "value": v} if rng.random() > 0.1 else {"cmd": "tell", "number": t["number"], "state": "fail"}
            out.append(req(msg))
            if i < n - 1: break
    p.stdin.close(); p.wait(); return out
NEAR = "--near" in sys.argv
args = [a for a in sys.argv[1:] if a != "--near"]
N = int(args[3]) if len(args) > 3 else 300
def near(a, b):
    """(asks identical, asks, largest relative difference of a parameter)."""
    same = asks = 0; worst = 0.0
    for x, y in zip(a, b):
        dx, dy = json.loads(x), json.loads(y)
        if "params" not in dx:
            continue
        asks += 1; same += x == y
        for k, u in dx["params"].items():
            v = dy.get("params", {}).get(k)
            if isinstance(u, (str, bool)) or isinstance(v, (str, bool)) or v is None:
                worst = max(worst, 0.0 if u == v else 1.0)
            else:
                worst = max(worst, abs(u - v) / max(abs(u), abs(v), 1e-300))
    return same, asks, worst
bad = 0; total = 0
for name, space in spaces.items():
    for seed in range(int(args[2]) if len(args) > 2 else 3):
        for conc in (1, 8):
            for direction in ("minimize", "maximize"):
                a = run(OLD, space, seed, N, conc, direction); b = run(NEW, space, seed, N, conc, direction)
                total += 1
                if NEAR:
                    same, asks, worst = near(a, b)
                    bad += worst > 1e-9 or len(a) != len(b)
                    print(f"{name} seed {seed} {conc} worker(s) {direction}: {same}/{asks} asks identical, "
                          f"largest relative difference {worst:.2e}")
                elif a != b:
                    bad += 1; i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                    print("DIFF", name, seed, conc, direction, "at line", i, a[i][:200], b[i][:200])
if NEAR:
    print(f"{total - bad}/{total} runs within 1e-9 ({N} asks each)")
else:
    print(f"{total - bad}/{total} runs identical ({N} asks each)")
sys.exit(1 if bad else 0)
