#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from Go
# modules, once per machine, like Helm, for the chart's alert rules:
#   promtool  <- github.com/prometheus/prometheus (xtask/go/promtool)
# Output: $CMP_CACHE/bin/promtool-<version>/ (printed on stdout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
version=$(cd "$here/promtool" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
# remove_all_sd: Prometheus's own build tag that leaves out its service-discovery plugins
# (cloud SDKs), which rule checks and rule unit tests never use.
tags=remove_all_sd
out="$cache/bin/promtool-$version-$tags"
if [ -x "$out/promtool" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
echo "building promtool $version into $out (first time only; a few minutes on 2 cores)" >&2
(cd "$here/promtool" && go build -tags "$tags" -trimpath -ldflags "-s -w" -o "$out/promtool.partial" \
  github.com/prometheus/prometheus/cmd/promtool) >&2
mv "$out/promtool.partial" "$out/promtool"
echo "$out"
