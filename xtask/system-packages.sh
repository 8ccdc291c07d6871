#!/usr/bin/env bash
# Debian packages the cargo workspace builds against: git2's HTTPS and SSH
# transports (libgit2 with libssh2, built from source by the crates) link the
# system OpenSSL. And those the image tests run: umoci unpacks the CMP image
# and runc runs it (xtask/tests/image.rs). Installs them with apt-get when
# they are missing and we may; otherwise says what to install. And the tests'
# node's (testenv/src/node.rs): containerd and the CNI plugins run its pods,
# iptables, ipset and conntrack serve kube-proxy and kube-router, iproute2 makes
# its network namespace. And the console's browser test drives Debian's
# Chromium through ChromeDriver (gateway/tests/console.rs).
set -euo pipefail
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
for tool in iptables ipset conntrack; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
done
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} from Debian's packages (git2's HTTPS/SSH link OpenSSL; the image tests run umoci and runc; the node runs containerd, CNI, iptables, ipset, conntrack; the console's browser test runs Chromium)" >&2
  apt-get install -y --no-install-recommends "${need[@]}" >&2 || {
    apt-get update >&2 && apt-get install -y --no-install-recommends "${need[@]}" >&2
  }
else
  echo "error: the build and tests need ${need[*]} (git2's HTTPS and SSH link OpenSSL; the image tests run umoci and runc; the node runs containerd, CNI, iptables, ipset, conntrack; the console's browser test runs Chromium): sudo apt-get install ${need[*]}" >&2
  exit 1
fi
