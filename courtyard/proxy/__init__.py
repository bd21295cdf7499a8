"""The proxy: a standalone reverse proxy process and the hub's clients for it.

``courtyard.proxy.cli`` is the ``courtyard-proxy`` process (routes, data path, REST API);
``base`` and ``rest`` are what the hub imports. ``PROXY_CLASSES`` maps the short names
accepted in configuration to import paths, so importing this package stays cheap.
"""

PROXY_CLASSES = {
    "builtin": "courtyard.proxy.rest.BuiltinProxy",
    "courtyard": "courtyard.proxy.rest.BuiltinProxy",
    "chp": "courtyard.proxy.rest.ConfigurableHTTPProxy",
    "configurable-http-proxy": "courtyard.proxy.rest.ConfigurableHTTPProxy",
    "jupyterhub.proxy.ConfigurableHTTPProxy": "courtyard.proxy.rest.ConfigurableHTTPProxy",
}

__all__ = ["PROXY_CLASSES"]
