#!/usr/bin/env bash
# The hub's own image, built without a registry (the Containerfile's equivalent): a Debian
# bookworm minbase rootfs with Courtyard from this checkout in a venv at /opt/courtyard
# (extras: jupyterhub, docker, kubernetes, postgres; the built-in proxy, so no Node), run as
# the non-root user courtyard (uid 1000), data in /srv/courtyard, config in /etc/courtyard.
# Imported as localhost/courtyard-hub:<key> and :latest, saved as a docker-archive tar beside
# the notebook image's (for containerd).
#
# Idempotent: the key hashes this script and the checkout's package sources; an unchanged
# checkout takes seconds. Env: COURTYARD_CLUSTER_CACHE (default /var/cache/courtyard-cluster).
set -euo pipefail
cd "$(dirname "$0")/../.."

EXTRAS=jupyterhub,docker,kubernetes,postgres
DEBS=python3,python3-venv,ca-certificates
SUITE=bookworm
IMAGE=localhost/courtyard-hub

cache=${COURTYARD_CLUSTER_CACHE:-/var/cache/courtyard-cluster}
out=$cache/images
key=$( { cat "$0"; find courtyard pyproject.toml README.md -type f ! -name '*.pyc' \
          ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } \
       | sha256sum | cut -c1-12)
tar=$out/courtyard-hub.tar
mkdir -p "$out"

exec 9>"$out/.hub.lock"
flock 9

if [ -f "$out/courtyard-hub.key" ] && [ "$(cat "$out/courtyard-hub.key")" = "$key" ] \
        && [ -s "$tar" ] && podman image exists "$IMAGE:$key"; then
    podman image exists "$IMAGE:latest" || podman tag "$IMAGE:$key" "$IMAGE:latest"
    exit 0
fi

mirror=$(grep -h -m1 -E '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2; exit}' || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$cache/hub-build.XXXXXX")
trap 'umount -l "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/rootfs
# the same bare rootfs the notebook image starts from (cached by scripts/images/notebook.sh)
base=$cache/rootfs/$SUITE-minbase-$(echo "$SUITE $DEBS $mirror" | sha256sum | cut -c1-12).tar
if [ ! -s "$base" ]; then
    mkdir -p "$cache/rootfs"
    for attempt in 1 2 3; do
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

# Courtyard from this checkout, as a wheel (no tests, no caches)
mkdir -p "$work/wheel"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" . >"$work/wheel.log" 2>&1 \
    || python3 -m pip wheel -q --no-deps -w "$work/wheel" . >"$work/wheel.log" 2>&1 \
    || { tail -20 "$work/wheel.log" >&2; exit 1; }
wheel=$(ls "$work/wheel"/courtyard-*.whl | head -1)
cp "$wheel" "$root/tmp/"

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
chroot "$root" env -i "${pip_env[@]}" /usr/bin/python3 -m venv /opt/courtyard
chroot "$root" env -i "${pip_env[@]}" /opt/courtyard/bin/pip install -q \
    "/tmp/$(basename "$wheel")[$EXTRAS]" >"$work/pip.log" 2>&1 \
    || { tail -20 "$work/pip.log" >&2; exit 1; }
umount "$root/proc"
rm -f "$root/tmp/build-ca.crt" "$root/tmp/$(basename "$wheel")"

chroot "$root" /usr/sbin/useradd --uid 1000 --user-group --no-create-home \
    --home-dir /srv/courtyard --shell /usr/sbin/nologin courtyard
mkdir -p "$root/srv/courtyard" "$root/etc/courtyard"
chroot "$root" chown courtyard:courtyard /srv/courtyard
chmod 700 "$root/srv/courtyard"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root/root/.cache"
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
: >"$root/etc/resolv.conf"

tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
podman import -q \
    --change 'USER courtyard' \
    --change 'WORKDIR /srv/courtyard' \
    --change 'ENV PATH=/opt/courtyard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV HOME=/srv/courtyard' \
    --change 'EXPOSE 8000' --change 'EXPOSE 8081' \
    --change 'CMD ["courtyard", "serve", "-f", "/etc/courtyard/jupyterhub_config.py"]' \
    "$work/rootfs.tar" "$IMAGE:$key" >/dev/null
podman tag "$IMAGE:$key" "$IMAGE:latest"
# earlier builds' tags go (and their images with them when nothing else uses them)
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE"); do
    case $old in "$IMAGE:$key"|"$IMAGE:latest") ;; *) podman rmi -f "$old" >/dev/null 2>&1 || true ;; esac
done
rm -f "$tar.tmp"
podman save -q --format docker-archive -o "$tar.tmp" "$IMAGE:latest"
mv "$tar.tmp" "$tar"
echo "$key" >"$out/courtyard-hub.key"
# each image script writes its own part of the README (the notebook's: notebook.sh)
cat >"$out/README.hub" <<README
courtyard-hub       podman: $IMAGE:$key (also :latest)
                    docker-archive tar: $tar (RepoTag $IMAGE:latest)
                    user courtyard (uid 1000), venv /opt/courtyard on PATH, data /srv/courtyard,
                    CMD courtyard serve -f /etc/courtyard/jupyterhub_config.py
README
{ echo "Images built by scripts/images/*.sh (Courtyard checkout); rebuilt when a script changes."
  for part in "$out"/README.*; do echo; cat "$part"; done; } >"$out/README"
