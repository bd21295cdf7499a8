"""The REST API under ``{base_url}hub/api``, wire-compatible with JupyterHub's."""
