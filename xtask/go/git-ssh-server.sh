#!/usr/bin/env bash
# Builds the tests' git-over-SSH server (xtask/go/gitssh: golang.org/x/crypto/ssh in
# front of git's own upload-pack and receive-pack), once per source version.
# Output: $CMP_CACHE/bin/git-ssh-server-<digest>/ (printed on stdout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

digest=$(cat "$here/gitssh/main.go" "$here/gitssh/go.mod" "$here/gitssh/go.sum" | sha256sum | cut -c1-12)
out="$cache/bin/git-ssh-server-$digest"
if [ -x "$out/git-ssh-server" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
echo "building git-ssh-server into $out" >&2
(cd "$here/gitssh" && go build -trimpath -ldflags "-s -w" -o "$out/git-ssh-server.partial" .) >&2
mv "$out/git-ssh-server.partial" "$out/git-ssh-server"
echo "$out"
