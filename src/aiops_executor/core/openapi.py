"""The error responses of the OpenAPI document, so that it describes every answer the service gives.

Routes document their own domain failures (``responses=error_responses(404, 409)``). What follows from the
shape of an operation is added here, to every operation at once:

- 500 ``INTERNAL_ERROR`` everywhere;
- 401 and 403 where the operation requires a bearer token;
- 422 ``VALIDATION_ERROR`` where it takes parameters or a body (replacing FastAPI's default, whose
  ``{"detail": [...]}`` body the service never sends);
- 413 ``PAYLOAD_TOO_LARGE`` and, for JSON bodies, 415 ``UNSUPPORTED_MEDIA_TYPE`` where it takes a body;
- and every documented 4xx/5xx without a body schema gets the contract's error body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from aiops_executor.core.errors import ERROR_DESCRIPTIONS, ErrorResponse

ERROR_SCHEMA_NAME = ErrorResponse.__name__
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": dict(_ERROR_REF)}}


def _document(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes = [500]
    if operation.get("security"):
        codes += [401, 403]
    body = operation.get("requestBody")
    if body or operation.get("parameters"):
        codes.append(422)
    if body:
        codes.append(413)
        if "application/json" in body.get("content", {}):
            codes.append(415)
    for code in codes:
        responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code]})
    validation = responses.get("422")
    if validation is not None and _uses_fastapi_validation_schema(validation):
        validation["description"] = ERROR_DESCRIPTIONS[422]
        validation["content"] = _error_content()
    for status, response in responses.items():
        if status[:1] in ("4", "5") and not response.get("content"):
            response["content"] = _error_content()


def _uses_fastapi_validation_schema(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").rsplit("/", 1)[-1] in _FASTAPI_VALIDATION_SCHEMAS


def document_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Adds the error responses to a generated OpenAPI document, in place; returns it."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA_NAME, ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}"))
    for path_item in document.get("paths", {}).values():
        for method in _METHODS:
            if method in path_item:
                _document(path_item[method])
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


def install_error_documentation(app: FastAPI) -> None:
    """Makes ``app.openapi()`` (and ``/openapi.json``) include the error responses."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
