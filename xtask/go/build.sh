#!/usr/bin/env bash
# Builds the real Kubernetes control plane from Go modules, once per machine.
#   kube-apiserver, kube-controller-manager, kubectl  <- k8s.io/kubernetes (xtask/go/kube)
#   etcd                                              <- go.etcd.io/etcd/server/v3 (xtask/go/etcd)
# Output: $CMP_CACHE/bin/<versions>/ (default ~/.cache/cmp). Re-running is a no-op
# when the binaries for the pinned versions are already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Outside the checkout by default, so a fresh clone on the same machine (CI) reuses it.
cache=${CMP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmp}

# The Go toolchain: the one on PATH when it is new enough, else the official
# toolchain module from the Go module proxy (a registry this machine reaches),
# unpacked once under the cache.
go_wanted=1.26.8
go_ok() { command -v go >/dev/null 2>&1 && [ "$(printf '%s\n' "go1.26" "$(go env GOVERSION 2>/dev/null | cut -d' ' -f1)" | sort -V | head -1)" = "go1.26" ]; }
if ! go_ok; then
  goroot="$cache/go-toolchain/go$go_wanted"
  if [ ! -x "$goroot/bin/go" ]; then
    proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
    url="$proxy/golang.org/toolchain/@v/v0.0.1-go$go_wanted.linux-amd64.zip"
    echo "no Go >= 1.26 on PATH; fetching go$go_wanted from $url" >&2
    if ! python3 - "$url" "$cache/go-toolchain" "$goroot" <<'PY'
import io, os, sys, urllib.request, zipfile
url, base, goroot = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=300).read()
tmp = goroot + ".partial"
with zipfile.ZipFile(io.BytesIO(data)) as z:
    first = z.namelist()[0]  # golang.org/toolchain@v0.0.1-goX.linux-amd64/...
    prefix = first[: first.index("/", first.index("@")) + 1]
    for info in z.infolist():
        if info.is_dir():
            continue
        path = os.path.join(tmp, info.filename[len(prefix):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(z.read(info))
        if (info.external_attr >> 16) & 0o111 or "/bin/" in path or "/pkg/tool/" in path:
            os.chmod(path, 0o755)
os.rename(tmp, goroot)
PY
    then
      echo "error: the Go toolchain (>= 1.26) is needed to build kube-apiserver and etcd from source," >&2
      echo "       and it could not be fetched. Install Go 1.26 (https://go.dev/dl) and re-run." >&2
      exit 1
    fi
  fi
  export PATH="$goroot/bin:$PATH" GOROOT="$goroot"
fi

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
