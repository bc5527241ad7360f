#!/usr/bin/env bash
# Training benchmark: `mnistctl train` against the PyTorch reference
# (bench/train/reference.py), side by side in one run, on the CPU, full data.
#
#   bash bench/train/run.sh [EPOCHS]        (default 5; the acceptance run)
#   MNISTCTL=/path/to/mnistctl bash bench/train/run.sh   (skip the build)
#
# Prints seconds per epoch for each, their ratio (ours / reference), and each
# one's test accuracy. Runs the two one after the other so they never share
# the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/env.sh"
EPOCHS="${1:-5}"
DATA="${MNIST_DATA_DIR:-$ROOT/../shared/data/mnist}"
OUT="$(mktemp -d)"
if [ -z "${MNISTCTL:-}" ]; then
  cargo build --release -q -p mnistctl
  MNISTCTL="$CARGO_TARGET_DIR/release/mnistctl"
fi
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; torch $(python -c 'import torch;print(torch.__version__)')"
echo "== ours: mnistctl train --device cpu --epochs $EPOCHS"
MNIST_NO_PROGRESS=1 "$MNISTCTL" train --device cpu --epochs "$EPOCHS" --data-dir "$DATA" --no-download --output-dir "$OUT/ours" >"$OUT/ours.txt"
echo "== reference: bench/train/reference.py --epochs $EPOCHS"
python "$ROOT/bench/train/reference.py" --data-dir "$DATA" --epochs "$EPOCHS" | tail -n 1 >"$OUT/ref.json"
python - "$OUT/ours/metrics.json" "$OUT/ref.json" <<'PY'
import json, statistics, sys
ours = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2]))
o = [e["epoch_seconds"] for e in ours["epochs"]]; r = [e["seconds"] for e in ref["epochs"]]
mo, mr = statistics.mean(o), statistics.mean(r)
print(f"{'':12}{'s/epoch (mean)':>16}{'per epoch':>40}{'test acc':>10}")
print(f"{'ours':12}{mo:>16.2f}{' '.join(f'{x:.1f}' for x in o):>40}{ours['test']['accuracy']:>9.2f}%")
print(f"{'reference':12}{mr:>16.2f}{' '.join(f'{x:.1f}' for x in r):>40}{ref['test_accuracy']:>9.2f}%")
print(f"ratio ours/reference: {mo/mr:.3f}")
PY
