#!/usr/bin/env bash
# The Slurm engine of the cluster tests (tests/cluster/slurm): slurm-wlm and munge from
# Debian (the daemons are started by the tests' fixtures, never here), sudo (batchspawner
# submits as the user with `sudo -E -u USER`), and the venv the jobs run the notebook server
# from, cached under /var/cache/courtyard-cluster/slurm-venv-<hash> (tests/cluster/slurm/venv.py).
# Idempotent and quiet; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

packages=(slurm-wlm munge sudo python3-venv)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

/usr/bin/python3 -m tests.cluster.slurm.venv >/dev/null
