#!/usr/bin/env bash
# Installs a large PyPI package (one whose dependency tree pip takes many
# minutes to resolve, such as langflow) into its own venv under the cache with
# uv, itself installed from PyPI by venv.sh; prints the venv's directory on its
# last line:
#   xtask/python/uv-venv.sh langflow langflow==1.13.0
# uv's own download cache sits under the cache too. Concurrent callers wait for
# one install; an interrupted install is started over.
set -euo pipefail
HERE=$(dirname "$0")
UV_VERSION=0.13.9
UV_VENV=$("$HERE/venv.sh" uv "uv==$UV_VERSION" | tail -n 1)
source "$HERE/cache-lock.sh" py "$@"
VENV=$CACHE/py/$NAME-${SPEC##*==}
if [ ! -f "$VENV/.installed" ]; then
  echo "installing $SPEC into $VENV with uv $UV_VERSION (once) ..." >&2
  rm -rf "$VENV"
  export UV_CACHE_DIR=$CACHE/uv UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
  "$UV_VENV/bin/uv" venv --quiet --python "$(command -v "$PYTHON")" "$VENV" >&2
  "$UV_VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "$SPEC" >&2
  touch "$VENV/.installed"
fi
echo "$VENV"
