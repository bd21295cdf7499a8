#!/usr/bin/env bash
# Create the benchmark's own environment, next to this script, if it is missing:
#   bench/.venv  - a virtualenv holding JupyterHub 6.x (the hub we compare against)
#   bench/.node  - configurable-http-proxy from npm, which JupyterHub needs to start
#   bench/.venv-courtyard - a virtualenv holding this checkout of Courtyard (editable, as a
#                  plain path entry), so both hubs start from an environment of their own
#                  rather than one carrying other packages' start-up hooks
# Re-running is cheap; pass --force to rebuild both.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
node_prefix="$here/.node"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv" "$node_prefix"
fi

if ! "$venv/bin/python" -c 'import jupyterhub, sys; sys.exit(jupyterhub.version_info[0] != 6)' \
        2>/dev/null; then
    echo "setup_env: creating $venv with jupyterhub 6.x" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # pip falls back to a 6.0 pre-release by itself only if no final 6.x exists
    "$venv/bin/python" -m pip install --quiet 'jupyterhub>=6,<7'
fi

cy_venv="$here/.venv-courtyard"
if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$cy_venv"
fi
if ! "$cy_venv/bin/python" -c 'import courtyard' 2>/dev/null; then
    echo "setup_env: creating $cy_venv with this checkout of courtyard" >&2
    "$python" -m venv "$cy_venv"
    "$cy_venv/bin/python" -m pip install --quiet --upgrade pip
    "$cy_venv/bin/python" -m pip install --quiet --config-settings editable_mode=compat \
        -e "$here/.."
fi

chp="$node_prefix/node_modules/.bin/configurable-http-proxy"
if [[ ! -x "$chp" ]]; then
    echo "setup_env: installing configurable-http-proxy into $node_prefix" >&2
    npm install --silent --no-audit --no-fund --prefix "$node_prefix" configurable-http-proxy
fi

"$venv/bin/python" -c 'import jupyterhub; print("jupyterhub", jupyterhub.__version__)'
"$chp" --version | sed 's/^/configurable-http-proxy /'
