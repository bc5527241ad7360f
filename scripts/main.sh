#!/usr/bin/env bash
# The main job on a fresh machine: set up (or reuse) the cached virtualenv,
# build the release binaries, and run a training job with the seed's defaults.
# Extra arguments go to the command.
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
"$CARGO_TARGET_DIR/release/mnistctl" train "$@"
