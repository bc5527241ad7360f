#!/usr/bin/env bash
# The TPE speed benchmark (bench/sampler/speed.py) on another machine that has a Python
# with numpy but no Optuna and no network, e.g. a GPU host (see ../shared/gpu/README.md).
#
#   bash bench/sampler/device_speed.sh prepare   # here: fills .gpu/ (git-ignored, ~15 MB):
#                                                # sampler-speed, speed.py, Optuna 5.0.0 and
#                                                # its pure-Python dependencies from .venv
#   bash .gpu/device_speed.sh run                # there, from the repository root: three full
#                                                # runs and three more at 1,000 x 5, results
#                                                # and the machine's description under $OUT
set -euo pipefail
case "${1:-}" in
prepare)
    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    cd "$ROOT"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/mnist-tune/target-sampler}"
    cargo build --release -q -p mnist-sampler --bin sampler-speed
    SP=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf .gpu/pylib && mkdir -p .gpu/pylib
    for p in optuna sqlalchemy alembic colorlog tqdm yaml packaging mako markupsafe typing_extensions.py; do
        cp -r "$SP/$p" .gpu/pylib/
    done
    # Pure Python only: compiled modules are for this machine's Python; each package
    # named here falls back to Python code without them.
    find .gpu/pylib -name __pycache__ -type d -prune -exec rm -rf {} +
    find .gpu/pylib -name '*.so' -delete
    cp "$CARGO_TARGET_DIR/release/sampler-speed" .gpu/ && strip .gpu/sampler-speed
    cp bench/sampler/speed.py bench/sampler/device_speed.sh .gpu/
    du -sh .gpu
    ;;
run)
    OUT=${OUT:-/tmp/device-speed}; mkdir -p "$OUT"
    PY=/opt/torch/.venv/bin/python; [ -x "$PY" ] || PY=python3
    {
        date -u; nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket|L2|L3"; uptime
        "$PY" -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
        PYTHONPATH=.gpu/pylib "$PY" -c "import optuna; print('optuna', optuna.__version__)"
    } 2>&1 | tee "$OUT/machine.txt"
    for i in 1 2 3; do
        echo "== full run $i"
        PYTHONPATH=.gpu/pylib timeout 150 "$PY" .gpu/speed.py --bin .gpu/sampler-speed --out "$OUT/run$i" 2>&1 | grep -E "^n=|Error"
    done
    for i in 4 5 6; do
        echo "== 1000x5 run $i"
        PYTHONPATH=.gpu/pylib timeout 60 "$PY" .gpu/speed.py --bin .gpu/sampler-speed --sizes 1000 --dims 5 --out "$OUT/run$i" 2>&1 | grep -E "^n=|Error"
    done
    ;;
*)
    echo "usage: $0 prepare | run" >&2
    exit 2
    ;;
esac
