#!/usr/bin/env bash
# Installs lfx (Langflow's executor, from PyPI) into a venv under the cache,
# once per version, and prints the venv's directory on its last line.
# Concurrent callers (parallel test binaries) wait for one install; an
# interrupted install is started over.
set -euo pipefail
LFX_VERSION=1.13.0
CACHE=${CMP_CACHE_DIR:-$HOME/.cache/cmp}
VENV=$CACHE/py/lfx-$LFX_VERSION
mkdir -p "$CACHE/py"
exec 9>"$CACHE/py/lfx.lock"
flock 9
if [ ! -f "$VENV/.installed" ]; then
  PYTHON=${PYTHON:-python3}
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: python3 is missing; install Python 3.10 or later to run the lfx runtime" >&2
    exit 1
  fi
  echo "installing lfx $LFX_VERSION into $VENV (once; about two minutes) ..." >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "lfx==$LFX_VERSION" >&2
  touch "$VENV/.installed"
fi
echo "$VENV"
