#!/usr/bin/env bash
# Installs Keycloak (the OIDC provider the seed platform runs) from Maven
# Central into the cache, once per version, and prints its directory on its
# last line:
#   xtask/keycloak/install.sh 26.7.3
# It runs on the machine's Java (17 or later). Concurrent callers wait for one
# install; an interrupted install is started over.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 VERSION" >&2
  exit 2
fi
VERSION=$1
CACHE=${CMP_CACHE_DIR:-$HOME/.cache/cmp}
DIR=$CACHE/keycloak/keycloak-$VERSION
mkdir -p "$CACHE/keycloak"
exec 9>"$CACHE/keycloak/install.lock"
flock 9
if [ ! -f "$DIR/.installed" ]; then
  for tool in mvn java unzip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "error: $tool is missing; install it (Debian: apt-get install maven openjdk-17-jre-headless unzip) to run Keycloak for the OIDC tests" >&2
      exit 1
    fi
  done
  echo "fetching org.keycloak:keycloak-quarkus-dist:$VERSION from Maven Central into $DIR (once) ..." >&2
  rm -rf "$DIR" "$CACHE/keycloak/download-$VERSION"
  mvn -q -B dependency:copy "-Dartifact=org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
    "-DoutputDirectory=$CACHE/keycloak/download-$VERSION" >&2
  unzip -q "$CACHE/keycloak/download-$VERSION/keycloak-quarkus-dist-$VERSION.zip" -d "$CACHE/keycloak/unpack-$VERSION"
  mv "$CACHE/keycloak/unpack-$VERSION/keycloak-$VERSION" "$DIR"
  rm -rf "$CACHE/keycloak/unpack-$VERSION" "$CACHE/keycloak/download-$VERSION"
  touch "$DIR/.installed"
fi
echo "$DIR"
