#!/usr/bin/env bash
# Builds the real Argo CD from Go modules, once per machine, with what its repo
# server and application controller need to run outside a cluster:
#   argocd (multi-call), argocd-repo-server, argocd-application-controller
#                                 <- github.com/argoproj/argo-cd/v3 (xtask/go/argocd)
#   kustomize                     <- sigs.k8s.io/kustomize/kustomize/v5 (xtask/go/kustomize)
#   git-verify-wrapper.sh, gpg-wrapper.sh  <- the argo-cd module's hack/ (the repo server runs them)
#   crds/                         <- the argo-cd module's manifests/crds/
#   redis-server                  <- Debian's redis-tools (+ libjemalloc2, liblzf1), unpacked, not installed
# Output: $CMP_CACHE/bin/argocd-<version>-kustomize-<version>/ (printed on stdout).
# Re-running is a no-op when everything for the pinned versions is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

. "$here/toolchain.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$cache/go-build} GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
argocd_version=$(cd "$here/argocd" && go list -m -f '{{.Version}}' github.com/argoproj/argo-cd/v3)
kustomize_version=$(cd "$here/kustomize" && go list -m -f '{{.Version}}' sigs.k8s.io/kustomize/kustomize/v5)
out="$cache/bin/argocd-$argocd_version-kustomize-$kustomize_version"
done_marker="$out/.complete"
if [ -f "$done_marker" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"

if [ ! -x "$out/argocd" ]; then
  echo "building Argo CD $argocd_version into $out (first time only; ~10 min on 2 cores)" >&2
  (cd "$here/argocd" && go build -p 2 -trimpath -ldflags "-s -w" -o "$out/argocd.partial" github.com/argoproj/argo-cd/v3/cmd) >&2
  mv "$out/argocd.partial" "$out/argocd"
fi
# The binary dispatches on its name.
ln -sf argocd "$out/argocd-repo-server"
ln -sf argocd "$out/argocd-application-controller"

if [ ! -x "$out/kustomize" ]; then
  echo "building kustomize $kustomize_version" >&2
  (cd "$here/kustomize" && go build -trimpath -ldflags "-s -w" -o "$out/kustomize" sigs.k8s.io/kustomize/kustomize/v5) >&2
fi

src=$(cd "$here/argocd" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
install -m 0755 "$src/hack/git-verify-wrapper.sh" "$src/hack/gpg-wrapper.sh" "$out/"
mkdir -p "$out/crds"
install -m 0644 "$src/manifests/crds/application-crd.yaml" "$src/manifests/crds/appproject-crd.yaml" \
  "$src/manifests/crds/applicationset-crd.yaml" "$out/crds/"

if [ ! -x "$out/redis/usr/bin/redis-server" ]; then
  echo "fetching Redis from Debian's packages (unpacked under $out/redis, not installed)" >&2
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download redis-tools libjemalloc2 liblzf1) >&2 || {
    echo "error: could not download redis-tools from Debian's packages; Argo CD needs Redis." >&2
    echo "       Check that apt can reach the Debian mirror (apt-get update) and re-run." >&2
    exit 1
  }
  rm -rf "$out/redis"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$out/redis"; done
  # redis-check-rdb is the server binary; it acts as the server under this name.
  ln -sf redis-check-rdb "$out/redis/usr/bin/redis-server"
  rm -rf "$debs"
fi

touch "$done_marker"
echo "$out"
