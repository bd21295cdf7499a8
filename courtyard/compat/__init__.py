"""JupyterHub's extension contracts (its Spawner and Authenticator classes) run on
Courtyard's own: the ``jupyterhub`` package is imported only when a config names one."""
