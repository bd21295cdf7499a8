"""The OpenAPI document of Courtyard's REST API, generated from the route tables.

Each endpoint's summary is its docstring's first line (or its name), its scopes come from
``@endpoint``; ``docs/openapi.json`` is this output, and a test keeps the two equal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.routing import Route

from .. import JUPYTERHUB_API_VERSION, __version__
from .base import Ctx, endpoint

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["status", "message"],
              "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}},
    "User": {"type": "object", "properties": {
        "kind": {"const": "user"}, "name": {"type": "string"}, "admin": {"type": "boolean"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
        "server": {"type": ["string", "null"]}, "pending": {"type": ["string", "null"]},
        "created": {"type": "string", "format": "date-time"},
        "last_activity": {"type": ["string", "null"], "format": "date-time"},
        "servers": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Server"}},
        "auth_state": {"type": ["object", "null"]}}},
    "Server": {"type": "object", "properties": {
        "name": {"type": "string"}, "display_name": {"type": "string"},
        "full_name": {"type": "string"}, "ready": {"type": "boolean"},
        "pending": {"type": ["string", "null"]}, "stopped": {"type": "boolean"},
        "url": {"type": "string"}, "progress_url": {"type": "string"},
        "full_url": {"type": ["string", "null"]}, "full_progress_url": {"type": ["string", "null"]},
        "started": {"type": ["string", "null"]}, "last_activity": {"type": ["string", "null"]},
        "user_options": {"type": "object"}, "state": {"type": "object"}}},
    "Group": {"type": "object", "properties": {
        "kind": {"const": "group"}, "name": {"type": "string"},
        "users": {"type": "array", "items": {"type": "string"}}, "properties": {"type": "object"},
        "roles": {"type": "array", "items": {"type": "string"}}}},
    "Service": {"type": "object", "properties": {
        "kind": {"const": "service"}, "name": {"type": "string"}, "admin": {"type": "boolean"},
        "roles": {"type": "array", "items": {"type": "string"}}, "url": {"type": "string"},
        "prefix": {"type": "string"}, "command": {"type": "array"}, "pid": {"type": "integer"},
        "info": {"type": "object"}, "display": {"type": "boolean"}}},
    "Token": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"const": "api_token"}, "user": {"type": "string"},
        "service": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
        "note": {"type": "string"}, "created": {"type": "string"},
        "expires_at": {"type": ["string", "null"]}, "last_activity": {"type": ["string", "null"]},
        "token": {"type": "string", "description": "only when the token is created"}}},
    "Role": {"type": "object", "properties": {
        "kind": {"const": "role"}, "name": {"type": "string"}, "description": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "users": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
        "services": {"type": "array", "items": {"type": "string"}},
        "managed_by": {"enum": ["default", "config", "api", "authenticator"]}}},
}

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def _operation(route: Route, method: str) -> dict[str, Any]:
    func = route.endpoint
    doc = (func.__doc__ or "").strip().splitlines()
    summary = doc[0] if doc else func.__name__.replace("_", " ")
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{func.__name__}",
        "summary": summary,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in _PARAM.findall(route.path)],
        "responses": {
            str(getattr(func, "status", 200)): {"description": "success"},
            "400": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
        },
    }
    if getattr(func, "public", False) or not hasattr(func, "scopes"):
        op["security"] = []
    else:
        op["x-scopes-any-of"] = list(func.scopes)
    return op


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        for method in sorted(route.methods or ()):
            if method == "HEAD" and "GET" in (route.methods or ()):
                continue
            paths.setdefault(path, {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Courtyard REST API", "version": __version__,
                 "description": "Wire-compatible with the JupyterHub REST API "
                 f"{JUPYTERHUB_API_VERSION}; see docs/compatibility.md."},
        "servers": [{"url": "/hub/api"}],
        "security": [{"token": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"token": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "'token <token>' or 'Bearer <token>'"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": SCHEMAS,
        },
    }


def document_text() -> str:
    from ..web.asgi import api_routes

    return json.dumps(openapi_document(api_routes()), indent=2) + "\n"


@endpoint(public=True)
async def serve_openapi(ctx: Ctx) -> dict[str, Any]:
    """The OpenAPI document of this API."""
    from ..web.asgi import api_routes

    return openapi_document(api_routes())


routes = [Route("/openapi.json", serve_openapi, methods=["GET"])]

if __name__ == "__main__":
    print(document_text(), end="")
