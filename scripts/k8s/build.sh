#!/usr/bin/env bash
# Build the Kubernetes node binaries from Debian's `kubernetes` source package.
#
# Why: no registry we can reach ships kube-apiserver/kubelet; Debian's source package carries the
# full upstream tree with vendor/, so it builds offline with Debian's Go. The build takes ~9 min
# of 2 cores, so the binaries are cached under /var/cache/courtyard-cluster/k8s-<src version>/
# and a second run only checks the cache. Prints the cache directory on stdout.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
CACHE_ROOT=${COURTYARD_CLUSTER_CACHE:-/var/cache/courtyard-cluster}
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet pause"
PKGS="golang-go dpkg-dev etcd-server rsync jq containerd runc containernetworking-plugins gcc libc6-dev iproute2 iptables"
# kubectl for validating manifests: Debian's kubernetes-client unless one is already installed.
command -v kubectl >/dev/null 2>&1 || PKGS="$PKGS kubernetes-client"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
SRC_LIST=/etc/apt/sources.list.d/courtyard-debian-src.sources
if [ ! -f "$SRC_LIST" ] && ! grep -rqs '^Types: *deb-src' /etc/apt/sources.list.d/; then
  mirror=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  mirror=${mirror:-http://deb.debian.org/debian}
  cat > "$SRC_LIST" <<SRC
Types: deb-src
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi
if [ -n "$missing" ] || [ -n "${need_update:-}" ]; then
  apt-get update -qq >/dev/null
fi
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The cache key is the source version Debian would hand us.
VERSION=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}')
if [ -z "$VERSION" ]; then
  apt-get update -qq >/dev/null
  VERSION=$(apt-cache showsrc kubernetes | awk '/^Version:/ {print $2; exit}')
fi
OUT="$CACHE_ROOT/k8s-$VERSION"
ok=1
for b in $BINS; do [ -x "$OUT/$b" ] || ok=0; done
if [ "$ok" = 1 ]; then
  echo "$OUT"
  exit 0
fi
if [ -n "${COURTYARD_K8S_CACHED_ONLY:-}" ]; then  # the tests: never a 9-minute build inside one
  echo "the Kubernetes binaries are not built yet: run scripts/ci/kubernetes.sh" >&2
  exit 3
fi

WORK="$CACHE_ROOT/src/k8s-$VERSION"
mkdir -p "$WORK" "$OUT"
cd "$WORK"
if ! ls -d kubernetes-*/ >/dev/null 2>&1; then
  apt-get source -qq "kubernetes=$VERSION" >/dev/null 2>&1
fi
TREE=$(ls -d "$WORK"/kubernetes-*/ | head -1)
cd "$TREE"
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
export GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off HOME=$WORK/home
export GOCACHE=$WORK/gocache
mkdir -p "$HOME"
make -s WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet" >/dev/null
gcc -Os -static -o _output/bin/pause build/pause/linux/pause.c
for b in $BINS; do install -m 0755 "_output/bin/$b" "$OUT/$b"; done
# The tree and Go cache are only needed to build; drop them to save ~2 GB.
cd /
rm -rf "$WORK"
echo "$OUT"
