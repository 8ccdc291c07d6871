#!/usr/bin/env bash
# Builds the real Kubernetes control plane from Go modules, once per machine.
#   kube-apiserver, kube-controller-manager, kubectl  <- k8s.io/kubernetes (xtask/go/kube)
#   etcd                                              <- go.etcd.io/etcd/server/v3 (xtask/go/etcd)
# Output: $CMP_CACHE/bin/<versions>/ (default ~/.cache/cmp). Re-running is a no-op
# when the binaries for the pinned versions are already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

kube_version=$(cd "$here/kube" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(cd "$here/etcd" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
out="$cache/bin/kube-$kube_version-etcd-$etcd_version"
need=()
for b in kube-apiserver kube-controller-manager kubectl etcd; do
  [ -x "$out/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
minor=$(echo "$kube_version" | cut -d. -f2)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
echo "building kube-apiserver, kube-controller-manager, kubectl $kube_version and etcd $etcd_version into $out (first time only; ~15-30 min on 2 cores)" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) >&2
(cd "$here/kube" && go build -p 2 -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl) >&2
echo "$out"
