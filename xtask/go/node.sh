#!/usr/bin/env bash
# Builds the tests' Kubernetes node from Go modules, once per machine:
#   kubelet, kube-scheduler, kube-proxy  <- k8s.io/kubernetes (xtask/go/kube, the control plane's version)
#   kube-router (NetworkPolicy firewall) <- github.com/cloudnativelabs/kube-router/v2 (xtask/go/kube-router)
#   coredns (cluster DNS)                <- github.com/coredns/coredns (xtask/go/coredns/main.go: the Corefile's plugins only)
#   registry (the node's images)         <- github.com/distribution/distribution/v3 (xtask/go/registry)
#   pause, netprobe, mkimage             <- xtask/go/node-images (the pod sandbox; real packets in tests)
# and the node's images, as OCI archives pushed to the node's registry (no Docker):
#   pause.tar (cmp.local/pause:node), coredns.tar (cmp.local/coredns:node), netprobe.tar (cmp.local/netprobe:node)
# The container runtime and CNI plugins are Debian's (containerd, containernetworking-plugins:
# xtask/system-packages.sh). Output: $CMP_CACHE/bin/node-<versions>/ (printed on stdout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
kube_version=$(cd "$here/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
router_version=$(cd "$here/kube-router" && go list -m -f '{{.Version}}' github.com/cloudnativelabs/kube-router/v2)
dns_version=$(cd "$here/coredns" && go list -m -f '{{.Version}}' github.com/coredns/coredns)
registry_version=$(cd "$here/registry" && go list -m -f '{{.Version}}' github.com/distribution/distribution/v3)
sources=$(cat "$here"/node-images/go.mod "$here"/node-images/*/main.go "$here"/registry/main.go "$here"/coredns/main.go | sha256sum | cut -c1-12)
out="$cache/bin/node-$kube_version-kube-router-$router_version-coredns-$dns_version-registry-$registry_version-$sources"
all=(kubelet kube-scheduler kube-proxy kube-router coredns registry pause netprobe mkimage)
images=(pause coredns netprobe)
missing=0
for b in "${all[@]}"; do [ -x "$out/$b" ] || missing=1; done
for i in "${images[@]}"; do [ -f "$out/$i.tar" ] || missing=1; done
if [ $missing = 0 ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out/partial"
echo "building the node (kubelet, kube-scheduler, kube-proxy $kube_version, kube-router $router_version, coredns $dns_version) into $out (first time only; ~5-10 min on 2 cores)" >&2
minor=$(echo "$kube_version" | cut -d. -f2)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
(cd "$here/kube" && go build -p 2 -trimpath -ldflags "$ldflags" -o "$out/partial/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy) >&2
(cd "$here/kube-router" && go build -trimpath -ldflags "-s -w" -o "$out/partial/kube-router" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router) >&2
(cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$out/partial/coredns" .) >&2
(cd "$here/registry" && go build -trimpath -ldflags "-s -w" -o "$out/partial/registry" .) >&2
(cd "$here/node-images" && go build -trimpath -ldflags "-s -w" -o "$out/partial/" ./pause ./netprobe ./mkimage) >&2
for i in "${images[@]}"; do
  "$out/partial/mkimage" -o "$out/partial/$i.tar" -name "cmp.local/$i:node" -entrypoint "/$i" "$out/partial/$i"
done
for b in "${all[@]}"; do mv "$out/partial/$b" "$out/$b"; done
for i in "${images[@]}"; do mv "$out/partial/$i.tar" "$out/$i.tar"; done
rmdir "$out/partial"
echo "$out"
