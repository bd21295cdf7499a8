#!/usr/bin/env bash
# The Docker engine of the cluster tests (tests/cluster/docker): podman with its
# Docker-compatible API, and the notebook image DockerSpawner and KubeSpawner run.
# Idempotent and quiet; the image is cached under /var/cache/courtyard-cluster/images
# (scripts/images/notebook.sh), so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

packages=(podman runc buildah debootstrap catatonit)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

# Two fixes this machine needs (components.md section 3), written only when not already set:
# root lacks CAP_SYS_RESOURCE, so podman's default ulimits (above the hard limit) cannot be
# set; and crun refuses hybrid cgroups, runc does not.
conf=/etc/containers/containers.conf
mkdir -p /etc/containers
touch "$conf"
set_in_section() {  # set_in_section SECTION KEY LINE: add LINE under [SECTION] unless KEY is set
    local section=$1 key=$2 line=$3
    if awk -v s="[$section]" -v k="$key" '
            /^[[:space:]]*\[/ { in_s = ($1 == s) }
            in_s && $0 ~ "^[[:space:]]*" k "[[:space:]]*=" { found = 1 }
            END { exit !found }' "$conf"; then
        return
    fi
    if grep -q "^[[:space:]]*\[$section\]" "$conf"; then
        sed -i "0,/^[[:space:]]*\[$section\]/s//[$section]\n$line/" "$conf"
    else
        printf '\n[%s]\n%s\n' "$section" "$line" >>"$conf"
    fi
}
set_in_section containers default_ulimits 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]'
set_in_section engine runtime 'runtime = "runc"'

bash scripts/images/notebook.sh
# the hub's own image (docs/deploy.md, "The hub itself in a container"); rebuilt when the
# checkout's package sources change
bash scripts/images/hub.sh
