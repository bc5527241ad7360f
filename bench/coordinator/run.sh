#!/usr/bin/env bash
# Coordinator throughput against Optuna, side by side, in one run.
#
#   bench/coordinator/run.sh [--trials N] [--clients N] [--optuna-seconds S] [--optuna-processes N]
#
# (a) `mnist-coordinator` (release build) on a fresh SQLite file, driven by
#     `coordinator-bench`: 64 concurrent gRPC clients, each on its own
#     connection, doing Ask + Tell with a trivial objective until the study's
#     N trials are complete; then the database is checked for lost or
#     duplicated trials.
# (b) Optuna 5.0 RDBStorage on SQLite, driven by 8 processes doing
#     ask + suggest + tell with the same objective for S seconds.
# Both use a random sampler. Prints both JSON results and the ratio, and
# writes them to $OUT_DIR (default: a temporary directory).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/env.sh"

TRIALS=20000
CLIENTS=64
OPTUNA_SECONDS=30
OPTUNA_PROCESSES=8
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trials) TRIALS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --optuna-seconds) OPTUNA_SECONDS="$2"; shift 2 ;;
    --optuna-processes) OPTUNA_PROCESSES="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT_DIR="${OUT_DIR:-$(mktemp -d -t coord-bench-XXXXXX)}"
mkdir -p "$OUT_DIR"

echo "== building (release)" >&2
cargo build --release -q -p mnist-coordinator --bins
BIN="$CARGO_TARGET_DIR/release"

echo "== (a) mnist-coordinator: $CLIENTS gRPC clients, $TRIALS trials" >&2
DB="$OUT_DIR/coordinator.db"
rm -f "$DB" "$DB-wal" "$DB-shm"
"$BIN/mnist-coordinator" --listen 127.0.0.1:0 --db "$DB" > "$OUT_DIR/coordinator.out" 2> "$OUT_DIR/coordinator.log" &
COORD_PID=$!
trap 'kill $COORD_PID 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 200); do
  URL="$(sed -n 's/^mnist-coordinator listening on //p' "$OUT_DIR/coordinator.out" | head -1)"
  [[ -n "$URL" ]] && break
  sleep 0.1
done
[[ -n "$URL" ]] || { echo "the coordinator did not start; see $OUT_DIR/coordinator.log" >&2; exit 1; }
"$BIN/coordinator-bench" --coordinator "$URL" --db "$DB" --clients "$CLIENTS" --trials "$TRIALS" > "$OUT_DIR/ours.json"
kill -TERM $COORD_PID; wait $COORD_PID || true
trap - EXIT
cat "$OUT_DIR/ours.json"

echo "== (b) Optuna RDBStorage/SQLite: $OPTUNA_PROCESSES processes, ${OPTUNA_SECONDS}s" >&2
python "$ROOT/bench/coordinator/optuna_bench.py" --processes "$OPTUNA_PROCESSES" --seconds "$OPTUNA_SECONDS" \
  --db "$OUT_DIR/optuna.db" > "$OUT_DIR/optuna.json" 2> "$OUT_DIR/optuna.log"
cat "$OUT_DIR/optuna.json"

python - "$OUT_DIR/ours.json" "$OUT_DIR/optuna.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1])); opt = json.load(open(sys.argv[2]))
ratio = ours["cycles_per_s"] / opt["cycles_per_s"] if opt["cycles_per_s"] else float("inf")
print(f"ours:   {ours['cycles_per_s']:.1f} cycles/s, ask p50 {ours['ask_p50_ms']:.2f} ms, p99 {ours['ask_p99_ms']:.2f} ms "
      f"({ours['clients']} clients, {ours['trials']} trials in {ours['seconds']:.1f} s; lost {ours['lost']}, duplicated {ours['duplicated']})")
print(f"optuna: {opt['cycles_per_s']:.1f} cycles/s, ask p50 {opt['ask_p50_ms']:.2f} ms, p99 {opt['ask_p99_ms']:.2f} ms "
      f"({opt['processes']} processes, {opt['cycles']} trials in {opt['seconds']:.1f} s; errors {opt['errors']})")
print(f"ratio:  {ratio:.1f}x")
json.dump({"ours": ours, "optuna": opt, "ratio": ratio}, open(sys.argv[1].replace("ours.json", "summary.json"), "w"))
PY
echo "results in $OUT_DIR" >&2
