"""Courtyard: a multi-user hub for Jupyter, wire-compatible with JupyterHub's REST API."""

__version__ = "0.1.0"

# The JupyterHub REST API version Courtyard speaks (sent as X-JupyterHub-Version and in
# GET /hub/api/). Clients such as jupyterhub-singleuser compare it with their own.
JUPYTERHUB_API_VERSION = "6.0.0"

__all__ = ["JUPYTERHUB_API_VERSION", "__version__"]
