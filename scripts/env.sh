# Sourced by the other scripts: where the caches live and how cargo finds libtorch.
#
# The virtualenv and the cargo target directory live outside the clone, in
# cache folders keyed by the hash of what they are built from, so a fresh
# clone on a warm machine reuses them and a cold machine builds them once.
# `.venv` in the repository is a symlink to the cached virtualenv.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${MNIST_TUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mnist-tune}"
REQ_HASH="$(sha256sum "$ROOT/requirements.txt" | cut -c1-12)"
VENV_DIR="$CACHE_ROOT/venv-$REQ_HASH"
# The target dir depends on libtorch (requirements) and on the toolchain; cargo
# handles Cargo.lock changes incrementally inside it.
TOOLCHAIN_HASH="$(rustc -V 2>/dev/null | sha256sum | cut -c1-8)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_ROOT/target-$REQ_HASH-$TOOLCHAIN_HASH}"
export LIBTORCH_USE_PYTORCH=1
export PATH="$VENV_DIR/bin:$PATH"
export VIRTUAL_ENV="$VENV_DIR"
