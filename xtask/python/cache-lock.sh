# Sourced by venv.sh and wheel.sh: checks their two arguments (NAME PACKAGE==VERSION),
# sets NAME, SPEC, PYTHON and CACHE, and takes the cache's lock for NAME under the
# directory $1 of the cache (released when the script exits), so concurrent callers
# (parallel test binaries) wait for one install. Fails when python3 is missing.
# Usage: source cache-lock.sh SUBDIR NAME PACKAGE==VERSION
if [ $# -ne 3 ]; then
  echo "usage: $0 NAME PACKAGE==VERSION" >&2
  exit 2
fi
NAME=$2
SPEC=$3
CACHE=${CMP_CACHE_DIR:-$HOME/.cache/cmp}
mkdir -p "$CACHE/$1"
exec 9>"$CACHE/$1/$NAME.lock"
flock 9
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: python3 is missing; install Python 3.10 or later (it fetches $SPEC for the tests)" >&2
  exit 1
fi
