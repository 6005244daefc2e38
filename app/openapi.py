"""What the OpenAPI document says beyond FastAPI's defaults, for every route (those added later
included): a description and examples on every operation, the 503 a down database or Redis
gives, and the links from a created verification to the operations that take its id.

Examples come from the models' ``examples`` (the README's values) and, where a model has none,
are built from the schema itself; a problem response's example is the first code it declares.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI

from app.errors import ERROR_CODES, TYPE_BASE

#: Operations that answer without the database or Redis (no 503 to declare).
_NO_DEPENDENCY = {("/healthz", "get"), ("/docs", "get"), ("/redoc", "get")}
_CREATE = ("/v1/verifications", "post")
_CODE = re.compile(r"`([a-z0-9_]+)`")


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def example_of(schema: dict[str, Any], document: dict[str, Any], depth: int = 0) -> Any:
    """An instance of ``schema``: its own example if it has one, else one built from its types,
    formats, enums, defaults and bounds."""
    schema = _resolve(schema, document)
    if "examples" in schema and isinstance(schema["examples"], list) and schema["examples"]:
        return copy.deepcopy(schema["examples"][0])
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, document).get("type") != "null"]
            return example_of((options or schema[key])[0], document, depth + 1)
    kind = schema.get("type")
    if depth > 8:
        return None
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: example_of(sub, document, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [example_of(schema.get("items", {}), document, depth + 1)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-31T08:00:00Z"
        if fmt == "date":
            return "2026-01-31"
        return "string"
    return None


def problem_example(code: str, status: int) -> dict[str, Any]:
    title = ERROR_CODES[code][1]
    return {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": title,
        "code": code,
    }


def _add_examples(operation: dict[str, Any], document: dict[str, Any]) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if "schema" in media and "example" not in media and "examples" not in media:
            media["example"] = example_of(media["schema"], document)
    for status, response in operation.get("responses", {}).items():
        for media in response.get("content", {}).values():
            if "example" in media or "examples" in media:
                continue
            codes = _CODE.findall(response.get("description", ""))
            if status.startswith(("4", "5")) and codes:
                media["examples"] = {
                    code: {"value": problem_example(code, int(status))}
                    for code in codes
                    if code in ERROR_CODES
                }
            elif "schema" in media:
                media["example"] = example_of(media["schema"], document)


def _declare_unavailable(operation: dict[str, Any]) -> None:
    """A down database (or Redis, where limits or revocations are shared) is 503
    ``service_unavailable`` with ``Retry-After``."""
    responses = operation.setdefault("responses", {})
    entry = responses.setdefault("503", {"description": ""})
    if "`service_unavailable`" not in entry["description"]:
        entry["description"] = ", ".join(
            filter(None, [entry["description"], "`service_unavailable`"])
        )
    entry.setdefault("headers", {})["Retry-After"] = {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }


def _links(document: dict[str, Any]) -> dict[str, Any]:
    """From a created verification to every integrator operation that takes its id in the path."""
    links: dict[str, Any] = {}
    for path, operations in document["paths"].items():
        if path.startswith("/v1/admin/"):
            continue
        for method, operation in operations.items():
            if (path, method) == _CREATE or not isinstance(operation, dict):
                continue
            # Path parameters only: what a query answers (the sandbox inbox) depends on timing,
            # which stateful fuzzers cannot replay.
            takes_id = any(
                p.get("name") == "verification_id" and p.get("in") == "path"
                for p in operation.get("parameters", [])
            )
            if not takes_id:
                continue
            escaped = path.replace("~", "~0").replace("/", "~1")
            name = operation.get("operationId", f"{method}{path}")
            links[name] = {
                "operationRef": f"#/paths/{escaped}/{method}",
                "parameters": {"path.verification_id": "$response.body#/id"},
                "description": f"{operation.get('summary', name)}, for the created verification",
            }
    return links


def complete_openapi(app: FastAPI) -> None:
    """Wrap ``app.openapi`` (after :func:`app.errors.document_problems`) to finish the document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "openapi_completed", False) and app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if not operation.get("description"):
                    operation["description"] = operation.get("summary", "") + "."
                if (path, method) not in _NO_DEPENDENCY:
                    _declare_unavailable(operation)
                _add_examples(operation, document)
        created = document["paths"].get(_CREATE[0], {}).get(_CREATE[1])
        if created is not None:
            created["responses"]["201"]["links"] = _links(document)
        app.openapi_schema = document
        app.state.openapi_completed = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]
