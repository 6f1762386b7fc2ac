"""Finishing touches on the generated OpenAPI 3.1 document, so it says exactly what the API does.

* Request bodies the views read themselves (YAML flows, signed webhook deliveries).
* Path parameters with the exact pattern or range their URL converter accepts.
* The error responses every operation can give (400, 401, 403, 413, 422) with the one error schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import APIFlask

F = TypeVar("F", bound=Callable[..., Any])

MAX_ID = 2**63 - 1
ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: The one error body of the API.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "not_found, validation_failed, conflict, forbidden…"},
                "message": {"type": "string", "description": "For people, in zh or en (Accept-Language)."},
                "details": {
                    "type": "array",
                    "description": "Field errors {path, field, message, code} or located problems {source, line, column, message, path}.",
                    "items": {"type": "object"},
                },
            },
        }
    },
}
_BODIES: dict[str, dict[str, Any]] = {}
_HEADERS: dict[str, list[dict[str, Any]]] = {}

#: URL converter name -> the JSON Schema of what it matches.
CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "ident": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"},
    "username": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"},
}
ERROR_TEXT = {
    "400": "Malformed request (bad JSON, NUL characters, nesting too deep)",
    "401": "Missing, unknown, revoked or expired token",
    "403": "The token's scopes or the user's roles do not allow this",
    "404": "Not found, or outside the caller's record scope",
    "409": "Conflict with the record's current state",
    "413": "The request body is too large",
    "415": "Unsupported content type",
    "422": "Validation failed; details list each field",
}


def _key(view: Callable[..., Any]) -> str:
    return f"{view.__module__}.{view.__name__}"


def request_body(content: dict[str, Any], *, schema: Any = None, required: bool = True) -> Callable[[F], F]:
    """Document a request body that the view parses itself."""

    def decorate(view: F) -> F:
        _BODIES[_key(view)] = {"content": content, "required": required}
        return view

    return decorate


def header_params(*params: dict[str, Any]) -> Callable[[F], F]:
    """Document request headers a view reads itself."""

    def decorate(view: F) -> F:
        _HEADERS[_key(view)] = list(params)
        return view

    return decorate


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", rule)


def _rename_keywords(node: Any) -> None:
    """JSON Schema keywords apispec will not pass through, written as x- extensions in metadata."""
    if isinstance(node, dict):
        if "x-property-names" in node:
            node["propertyNames"] = node.pop("x-property-names")
        for value in node.values():
            _rename_keywords(value)
    elif isinstance(node, list):
        for value in node:
            _rename_keywords(value)


def init_app(app: APIFlask) -> None:
    app.config["HTTP_ERROR_SCHEMA"] = ERROR_SCHEMA
    app.config["VALIDATION_ERROR_SCHEMA"] = ERROR_SCHEMA

    @app.spec_processor
    def finish(spec: Any) -> Any:
        spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        _rename_keywords(spec)
        converters: dict[tuple[str, str], str] = {}
        views: dict[tuple[str, str], Callable[..., Any]] = {}
        for rule in app.url_map.iter_rules():
            if not rule.rule.startswith("/api/"):
                continue
            path = _openapi_path(rule.rule)
            for name, converter in re.findall(r"<([^<:>]+):([^<>]+)>", rule.rule):
                converters[(path, converter)] = name
            for method in rule.methods or ():
                views[(path, method.lower())] = app.view_functions[rule.endpoint]
        for path, operations in spec.get("paths", {}).items():
            for method, op in operations.items():
                if not isinstance(op, dict) or method not in ("get", "post", "put", "patch", "delete"):
                    continue
                view = views.get((path, method))
                key = _key(view) if view is not None else ""
                if key in _BODIES:
                    op["requestBody"] = _BODIES[key]
                for param in op.get("parameters", []):
                    if param.get("in") == "path":
                        param["required"] = True
                        kind = converters.get((path, param["name"]))
                        if kind in CONVERTER_SCHEMAS:
                            param["schema"] = dict(CONVERTER_SCHEMAS[kind])
                if key in _HEADERS:
                    op.setdefault("parameters", []).extend(_HEADERS[key])
                responses = op.setdefault("responses", {})
                codes = ["400"]
                if op.get("security"):
                    codes += ["401", "403"]
                if "requestBody" in op:
                    codes += ["413", "415", "422"]
                if any(p.get("in") == "query" for p in op.get("parameters", [])):
                    codes.append("422")
                for code in codes:
                    responses.setdefault(code, {"description": ERROR_TEXT[code]})
                for code, response in responses.items():
                    if code.startswith(("4", "5")):
                        response["content"] = {"application/json": {"schema": ERROR_REF}}
                        response.setdefault("description", ERROR_TEXT.get(code, "Error"))
        return spec
