#!/usr/bin/env bash
# Builds Helm from Go modules, once per machine, like the kube binaries, with the
# CRDs of the optional kinds the chart renders (for server-side dry runs):
#   helm                                         <- helm.sh/helm/v4 (xtask/go/helm)
#   crds/cert-manager.io_{certificates,issuers}  <- github.com/cert-manager/cert-manager (deploy/crds)
#   crds/monitoring.coreos.com_{servicemonitors,prometheusrules} <- github.com/prometheus-operator/prometheus-operator
# Output: $CMP_CACHE/bin/helm-<version>/ (printed on stdout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
version=$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v4)
out="$cache/bin/helm-$version"
# .complete-2: the set with the PrometheusRule CRD (a cache made before it is topped up).
if [ -x "$out/helm" ] && [ -f "$out/crds/.complete-2" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
if [ ! -x "$out/helm" ]; then
echo "building helm $version into $out (first time only; a few minutes on 2 cores)" >&2
(cd "$here/helm" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  -o "$out/helm.partial" helm.sh/helm/v4/cmd/helm) >&2
mv "$out/helm.partial" "$out/helm"
fi
module_dir() { (cd "$here/helm" && go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'); }
mkdir -p "$out/crds"
certmanager=$(module_dir github.com/cert-manager/cert-manager@v1.21.2)
prometheus=$(module_dir github.com/prometheus-operator/prometheus-operator@v0.85.0)
install -m 0644 "$certmanager/deploy/crds/cert-manager.io_certificates.yaml" \
  "$certmanager/deploy/crds/cert-manager.io_issuers.yaml" \
  "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
  "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$out/crds/"
touch "$out/crds/.complete-2"
echo "$out"
