#!/usr/bin/env bash
# Speed benchmark: one TPE suggestion, ours vs Optuna 5.0.0, same run, same machine.
# Usage: bash bench/sampler/speed.sh [--sizes 100,1000,10000] [--dims 5,20]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/mnist-tune/target-sampler}"
cargo build --release -q -p mnist-sampler --bin sampler-speed --manifest-path "$ROOT/Cargo.toml"
exec "$ROOT/.venv/bin/python" "$ROOT/bench/sampler/speed.py" --bin "$CARGO_TARGET_DIR/release/sampler-speed" "$@"
