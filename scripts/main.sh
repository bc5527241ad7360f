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
# MLflow: use the tracking server in MLFLOW_TRACKING_URI, else run a local one
# (data in ./mlflow/, UI at http://127.0.0.1:${MLFLOW_PORT:-5000}) and leave it
# running so the study can be browsed afterwards. MNIST_NO_MLFLOW_SERVER=1
# skips it (everything then waits in the study database's outbox).
health() { python -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$1" 2>/dev/null; }
if [ -z "${MLFLOW_TRACKING_URI:-}" ] && [ -z "${MNIST_NO_MLFLOW_SERVER:-}" ]; then
  MLFLOW_URI="http://127.0.0.1:${MLFLOW_PORT:-5000}"
  if ! health "$MLFLOW_URI"; then
    mkdir -p "$ROOT/mlflow"
    echo "main: starting a local MLflow server at $MLFLOW_URI (log: mlflow/server.log)"
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$VENV_DIR/bin/mlflow" server \
      --backend-store-uri "sqlite:///$ROOT/mlflow/mlflow.db" --artifacts-destination "$ROOT/mlflow/artifacts" \
      --host 127.0.0.1 --port "${MLFLOW_PORT:-5000}" --workers 1 >"$ROOT/mlflow/server.log" 2>&1 &
    echo $! >"$ROOT/mlflow/server.pid"
    for _ in $(seq 1 180); do health "$MLFLOW_URI" && break; sleep 1; done
    health "$MLFLOW_URI" || { echo "main: the MLflow server did not start; see mlflow/server.log" >&2; tail -n 20 "$ROOT/mlflow/server.log" >&2; exit 1; }
  fi
  export MLFLOW_TRACKING_URI="$MLFLOW_URI"
  trap 'echo; echo "MLflow UI: $MLFLOW_TRACKING_URI (the server keeps running; stop it with: kill \$(cat mlflow/server.pid))"' EXIT
fi
if [ $# -eq 0 ]; then
  # A full-data study of 20 trials takes hours on a 2-core CPU machine; these
  # defaults keep it short there. Pass your own arguments for the full run.
  set -- tune --n-trials 20 --epochs 3 --train-limit 15000
fi
"$CARGO_TARGET_DIR/release/mnistctl" "$@"
