#!/usr/bin/env bash
# The notebook image for DockerSpawner (podman) and KubeSpawner (containerd), built without a
# registry: a Debian bookworm minbase rootfs (debootstrap) with a venv at /opt/venv holding
# JupyterHub (for jupyterhub-singleuser), Jupyter Server, JupyterLab and ipykernel, run as the
# non-root user jovyan (uid 1000). Imported as localhost/courtyard-notebook:<key> and :latest,
# and saved as a docker-archive tar for containerd (`ctr images import`).
#
# Idempotent: the key hashes the package lists and RECIPE (bump it when the build steps
# below change); when the image with that key and its tar exist, the script only checks
# them (seconds).
# Env: COURTYARD_CLUSTER_CACHE (default /var/cache/courtyard-cluster).
set -euo pipefail

PACKAGES=("jupyterhub>=5,<7" "jupyter_server>=2.13,<3" "jupyterlab>=4,<5" "ipykernel>=6,<8")
DEBS=python3,python3-venv,ca-certificates
SUITE=bookworm
IMAGE=localhost/courtyard-notebook
RECIPE=1

cache=${COURTYARD_CLUSTER_CACHE:-/var/cache/courtyard-cluster}
out=$cache/images
key=$(echo "$RECIPE ${PACKAGES[*]} $DEBS $SUITE" | sha256sum | cut -c1-12)
tar=$out/courtyard-notebook.tar
mkdir -p "$out"

exec 9>"$out/.notebook.lock"
flock 9

if [ -f "$out/courtyard-notebook.key" ] && [ "$(cat "$out/courtyard-notebook.key")" = "$key" ] \
        && [ -s "$tar" ] && podman image exists "$IMAGE:$key"; then
    podman image exists "$IMAGE:latest" || podman tag "$IMAGE:$key" "$IMAGE:latest"
    exit 0
fi

# the Debian mirror this machine already uses
mirror=$(grep -h -m1 -E '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2; exit}' || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$cache/notebook-build.XXXXXX")
trap 'umount -l "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/rootfs
# the bare rootfs is cached on its own (keyed on suite, packages and mirror): a change to
# the Python packages does not fetch Debian again
base=$cache/rootfs/$SUITE-minbase-$(echo "$SUITE $DEBS $mirror" | sha256sum | cut -c1-12).tar
if [ ! -s "$base" ]; then
    mkdir -p "$cache/rootfs"
    for attempt in 1 2 3; do  # a mirror hiccup should not fail CI
        rm -rf "$root"
        debootstrap --variant=minbase --include="$DEBS" "$SUITE" "$root" "$mirror" \
            >"$work/debootstrap.log" 2>&1 && break
        [ "$attempt" = 3 ] && { tail -20 "$work/debootstrap.log" >&2; exit 1; }
        sleep 5
    done
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$base.tmp" . && mv "$base.tmp" "$base"
else
    mkdir -p "$root" && tar -C "$root" --numeric-owner -xf "$base"
fi

# pip in the chroot reaches PyPI as the host's pip does: DNS, the host's CA bundle (for the
# build only: the image keeps Debian's) and the host's pip settings that make sense there
# (index URLs; local wheel dirs are the host's only)
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/build-ca.crt"
mount -t proc proc "$root/proc"
pip_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
         PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_CACHE_DIR=1
         PIP_CERT=/tmp/build-ca.crt)
for var in PIP_INDEX_URL HTTP_PROXY HTTPS_PROXY http_proxy https_proxy NO_PROXY no_proxy; do
    [ -n "${!var:-}" ] && pip_env+=("$var=${!var}")
done
index=$(python3 -m pip config get global.index-url 2>/dev/null || true)
[ -n "$index" ] && [ "${index#file:}" = "$index" ] && pip_env+=("PIP_INDEX_URL=$index")
chroot "$root" env -i "${pip_env[@]}" /usr/bin/python3 -m venv /opt/venv
chroot "$root" env -i "${pip_env[@]}" /opt/venv/bin/pip install -q "${PACKAGES[@]}" \
    >"$work/pip.log" 2>&1 || { tail -20 "$work/pip.log" >&2; exit 1; }
# rfc3987-syntax makes every server start 3-4 s slower (it builds a grammar at import);
# jupyter_events only uses it to validate URI formats and works without it
chroot "$root" env -i "${pip_env[@]}" /opt/venv/bin/pip uninstall -q -y rfc3987-syntax \
    >/dev/null 2>&1 || true
umount "$root/proc"
rm -f "$root/tmp/build-ca.crt"

chroot "$root" /usr/sbin/useradd --uid 1000 --user-group --create-home --shell /bin/bash jovyan
mkdir -p "$root/home/jovyan/work"
chroot "$root" chown -R jovyan:jovyan /home/jovyan
# what an image needs no more: docs, locales, apt lists and caches, the host's resolver
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/*.log "$root/root/.cache"
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
: >"$root/etc/resolv.conf"

tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
podman import -q \
    --change 'USER jovyan' \
    --change 'WORKDIR /home/jovyan' \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV HOME=/home/jovyan' \
    --change 'EXPOSE 8888' \
    --change 'CMD ["jupyterhub-singleuser"]' \
    "$work/rootfs.tar" "$IMAGE:$key" >/dev/null
podman tag "$IMAGE:$key" "$IMAGE:latest"
# earlier builds' tags go (and their images with them when nothing else uses them)
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE"); do
    case $old in "$IMAGE:$key"|"$IMAGE:latest") ;; *) podman rmi -f "$old" >/dev/null 2>&1 || true ;; esac
done
rm -f "$tar.tmp"
podman save -q --format docker-archive -o "$tar.tmp" "$IMAGE:latest"
mv "$tar.tmp" "$tar"
echo "$key" >"$out/courtyard-notebook.key"
# each image script writes its own part of the README (the hub's: scripts/images/hub.sh)
cat >"$out/README.notebook" <<README
courtyard-notebook  podman: $IMAGE:$key (also :latest)
                    docker-archive tar: $tar (RepoTag $IMAGE:latest)
                    user jovyan (uid 1000), venv /opt/venv on PATH, CMD jupyterhub-singleuser
                    packages: ${PACKAGES[*]}
README
{ echo "Images built by scripts/images/*.sh (Courtyard checkout); rebuilt when a script changes."
  for part in "$out"/README.*; do echo; cat "$part"; done; } >"$out/README"
