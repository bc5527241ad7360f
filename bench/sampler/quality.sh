#!/usr/bin/env bash
# Quality benchmark: our TPE vs Optuna 5.0.0 TPESampler, same run, same machine.
# Usage: bash bench/sampler/quality.sh [extra args for quality.py, e.g. --seeds 5]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/mnist-tune/target-sampler}"
cargo build --release -q -p mnist-sampler --bin sampler-askd --manifest-path "$ROOT/Cargo.toml"
exec "$ROOT/.venv/bin/python" "$ROOT/bench/sampler/quality.py" --askd "$CARGO_TARGET_DIR/release/sampler-askd" "$@"
