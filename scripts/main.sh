#!/usr/bin/env bash
# The main job on a fresh machine: set up (or reuse) the cached virtualenv,
# build the release binaries, and run a 20-trial tuning study on this machine
# (the seed's `python tune.py --n_trials 20`): an embedded coordinator, one
# local worker per device, TPE with median pruning, a live progress bar, and
# the best trial at the end. Arguments replace the default ones, e.g.
#   bash scripts/main.sh tune --n-trials 20 --epochs 5     (full data, slower)
#   bash scripts/main.sh train                             (one training run)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
cargo build --release -p mnistctl
# No network here: use the shared copy of MNIST when there is one.
if [ -z "${MNIST_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
  export MNIST_DATA_DIR="$ROOT/../shared/data/mnist"
fi
if [ $# -eq 0 ]; then
  # A full-data study of 20 trials takes hours on a 2-core CPU machine; these
  # defaults keep it short there. Pass your own arguments for the full run.
  set -- tune --n-trials 20 --epochs 3 --train-limit 15000
fi
"$CARGO_TARGET_DIR/release/mnistctl" "$@"
