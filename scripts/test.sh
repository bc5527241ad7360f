#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (or reuse) the cached
# virtualenv with torch, mlflow and optuna, then build and run every test.
# Tests read MNIST from ../shared/data/mnist (override: MNIST_TEST_DATA) and
# use the virtualenv's Python for the real mlflow and optuna checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
export MNIST_TEST_PYTHON="${MNIST_TEST_PYTHON:-$VENV_DIR/bin/python}"
export MNIST_TEST_DATA="${MNIST_TEST_DATA:-$ROOT/../shared/data/mnist}"
export MNIST_NO_PROGRESS=1
# Tests start their own MLflow servers; never log to one from the environment.
unset MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN MLFLOW_EXPERIMENT_NAME
cd "$ROOT"
echo "test: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
# The cached target directory outlives clones; every code change leaves test
# binaries (hundreds of MB each, libtorch linked) and incremental state behind.
# Past 30 GB, drop those not touched for two days (cargo rebuilds what it needs).
if [ -d "$CARGO_TARGET_DIR/debug" ] && [ "$(du -sm "$CARGO_TARGET_DIR" | cut -f1)" -gt 30000 ]; then
  echo "test: pruning stale build outputs in $CARGO_TARGET_DIR/debug"
  for d in "$CARGO_TARGET_DIR/debug/deps" "$CARGO_TARGET_DIR/debug/incremental"; do
    [ -d "$d" ] || continue
    find "$d" -mindepth 1 -maxdepth 1 -mtime +1 \( -type d -o \( -type f -executable -size +20M \) \) \
      -exec rm -rf {} + 2>/dev/null || true
  done
fi
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
