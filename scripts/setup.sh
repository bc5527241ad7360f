#!/usr/bin/env bash
# Idempotent set-up: creates (or reuses) the cached virtualenv with torch,
# mlflow and optuna, and links it as ./.venv. Safe to run any number of times.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
mkdir -p "$CACHE_ROOT"
if [ ! -f "$VENV_DIR/.complete" ]; then
  echo "setup: creating virtualenv $VENV_DIR (torch is ~4.6 GB, a few minutes the first time)"
  rm -rf "$VENV_DIR"
  python3 -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install -q --upgrade pip
  "$VENV_DIR/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  touch "$VENV_DIR/.complete"
else
  echo "setup: reusing virtualenv $VENV_DIR"
fi
EXTRA_HASH="$(sha256sum "$ROOT/requirements-extra.txt" | cut -c1-12)"
if [ ! -f "$VENV_DIR/.extra-$EXTRA_HASH" ]; then
  echo "setup: installing requirements-extra.txt"
  "$VENV_DIR/bin/python" -m pip install -q -r "$ROOT/requirements-extra.txt"
  rm -f "$VENV_DIR"/.extra-*
  touch "$VENV_DIR/.extra-$EXTRA_HASH"
fi
ln -sfn "$VENV_DIR" "$ROOT/.venv"
"$VENV_DIR/bin/python" -c 'import torch; print("setup: torch", torch.__version__)'
