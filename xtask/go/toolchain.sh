# Sourced by the build scripts here: sets $cache (the machine-wide cache, outside
# the checkout, so a fresh clone on the same machine reuses it) and puts a Go
# >= 1.26 on PATH.
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

