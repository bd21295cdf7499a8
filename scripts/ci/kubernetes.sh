#!/usr/bin/env bash
# The Kubernetes engine of the cluster tests (tests/cluster/kubernetes): the node binaries
# built from Debian's kubernetes source package (scripts/k8s/build.sh, ~9 min once, cached in
# /var/cache/courtyard-cluster/k8s-<version>/), containerd, runc, the CNI plugins, etcd and
# kubectl, the pause image tar, and the notebook image (scripts/images/notebook.sh, shared with
# the podman tests). Idempotent and quiet; a second run takes seconds. The images are imported
# into each test cluster's own containerd by the test fixture.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/k8s/build.sh >/dev/null
if [ -f scripts/ci/podman.sh ]; then
    bash scripts/ci/podman.sh         # podman (configured for this machine) + the notebook image
else
    bash scripts/images/notebook.sh
fi
python3 scripts/k8s/cluster.py images >/dev/null
