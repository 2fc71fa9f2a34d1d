"""The OpenAPI document: what a route declares, and what is added to every operation from its shape.

A route declares what only it knows::

    @router.post(
        "/teams",
        operation_id="createTeam",                 # lowerCamelCase, stable: generated clients name methods by it
        summary="Create a team",                   # a few words
        description="Validates the topology ...",  # what it does (roles and errors are added, see below)
        responses=errors({400: "INVALID_TOPOLOGY", 409: {"TEAM_NAME_EXISTS": "another team has this name"}}),
    )

and, for a Server-Sent Events answer, ``responses={**event_stream(EVENTS, "..."), **errors(...)}``. The tag is
the router's (``APIRouter(tags=["teams"])``), one per domain, declared with its description in ``app.py``.

What follows from the shape of an operation is added here, to every operation at once
(``install_openapi_documentation``):

- 500 ``INTERNAL_ERROR`` everywhere;
- 401 and 403 where the operation requires a bearer token;
- 422 ``VALIDATION_ERROR`` where it takes parameters or a body (replacing FastAPI's default, whose
  ``{"detail": [...]}`` body the service never sends);
- 413 ``PAYLOAD_TOO_LARGE`` and, for JSON bodies, 415 ``UNSUPPORTED_MEDIA_TYPE`` where it takes a body;
- every documented 4xx/5xx gets the contract's error body, its codes in ``x-error-codes`` and an example;
- the description gets two closing paragraphs: who may call the operation (read off the route's role guard,
  any dependency whose callable has an ``openapi_role``) and its errors with their codes;
- the payload schemas of the event streams go into ``components.schemas``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel

from aiops_executor.core.http_errors import ERROR_DESCRIPTIONS, ErrorResponse

Responses = dict[int | str, dict[str, Any]]
# A status's codes: one, several, or each with what it means.
Codes = str | Sequence[str] | Mapping[str, str]

ERROR_SCHEMA_NAME = ErrorResponse.__name__
SCHEMA_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": SCHEMA_REF.format(model=ERROR_SCHEMA_NAME)}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
ERROR_CODES_KEY = "x-error-codes"
EVENTS_KEY = "x-sse-events"
ROLE_KEY = "x-required-role"

# The codes of the answers every operation of a shape has (see the module docstring), with what they mean.
COMMON_CODES: dict[int, dict[str, str]] = {
    status: {code: ERROR_DESCRIPTIONS[status].split(": ", 1)[1]}
    for status, code in (
        (401, "UNAUTHORIZED"),
        (403, "FORBIDDEN"),
        (405, "METHOD_NOT_ALLOWED"),
        (413, "PAYLOAD_TOO_LARGE"),
        (415, "UNSUPPORTED_MEDIA_TYPE"),
        (422, "VALIDATION_ERROR"),
        (429, "RATE_LIMITED"),
        (500, "INTERNAL_ERROR"),
    )
}
# Every stream model named by any route, so the document can carry their schemas.
_EVENT_MODELS: dict[str, type[BaseModel]] = {}


def _code_meanings(codes: Codes) -> dict[str, str]:
    if isinstance(codes, str):
        return {codes: ""}
    if isinstance(codes, Mapping):
        return dict(codes)
    return dict.fromkeys(codes, "")


def _example(code: str, meaning: str) -> dict[str, Any]:
    return {
        "summary": meaning or code,
        "value": {
            "error_code": code,
            "error_message": meaning or code.replace("_", " ").lower(),
            "details": {},
            "request_id": "6f1c2d1e8a3b4c5d",
        },
    }


def documented_error(status: int, codes: Codes | None = None, description: str | None = None) -> dict[str, Any]:
    """One documented error answer: the contract's error body, its codes, an example of each."""
    meanings = _code_meanings(codes if codes is not None else COMMON_CODES.get(status, {}))
    if description is None:
        if meanings and any(meanings.values()):
            description = "; ".join(f"{code}: {text}" if text else code for code, text in meanings.items())
        elif meanings:
            generic = ERROR_DESCRIPTIONS.get(status, "")
            label = ", ".join(meanings)
            description = generic if generic.startswith(label) else f"{label}: {generic.split(': ', 1)[-1]}"
        else:
            description = ERROR_DESCRIPTIONS.get(status, "error")
    response: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if meanings:
        response[ERROR_CODES_KEY] = list(meanings)
        response["content"] = {
            "application/json": {"examples": {code: _example(code, text) for code, text in meanings.items()}}
        }
    return response


def errors(codes_by_status: Mapping[int, Codes] | Iterable[int]) -> Responses:
    """``responses=`` for a route's own failures, e.g. ``errors({404: "TEAM_NOT_FOUND", 409: ["CONFLICT"]})``,
    or with what each code means: ``{409: {"TEAM_NAME_EXISTS": "another team has this name"}}``. A bare status
    (``errors([404])``) gets only its family's generic description and no codes, which tests/service/test_openapi.py
    refuses: a client must learn from the document which codes it can get."""
    if isinstance(codes_by_status, Mapping):
        return {status: documented_error(status, codes) for status, codes in codes_by_status.items()}
    return {status: documented_error(status) for status in codes_by_status}


def event_stream(events: Mapping[str, type[BaseModel]], description: str, status: int = 200) -> Responses:
    """``responses=`` for a ``text/event-stream`` answer. Each SSE frame is ``id: <seq>`` / ``event: <name>`` /
    ``data: <JSON>``; ``x-sse-events`` maps every event name to the schema of its ``data`` (a union of them
    is ``x-sse-payload``), so that a client can type what it parses."""
    for model in events.values():
        _EVENT_MODELS[model.__name__] = model
    refs = {name: {"$ref": SCHEMA_REF.format(model=model.__name__)} for name, model in events.items()}
    return {
        status: {
            "description": description,
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "Server-Sent Events: `id: <seq>`, `event: <name>`, `data: <JSON payload>`",
                    },
                    EVENTS_KEY: refs,
                    "x-sse-payload": {"oneOf": list(refs.values())},
                }
            },
        }
    }


# --------------------------------------------------------------------------------------------- the document


def _error_content(examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": dict(_ERROR_REF)}
    if examples:
        media["examples"] = examples
    return {"application/json": media}


def _document(operation: dict[str, Any], role: str | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    implied = [500]
    if operation.get("security"):
        implied += [401, 403]
    body = operation.get("requestBody")
    if body or operation.get("parameters"):
        implied.append(422)
    if body:
        implied.append(413)
        if "application/json" in body.get("content", {}):
            implied.append(415)
    for code in implied:
        if str(code) not in responses:
            shown = documented_error(code)
            shown.pop("model")
            responses[str(code)] = shown
    validation = responses.get("422")
    if validation is not None and _uses_fastapi_validation_schema(validation):
        validation.update(documented_error(422))
        validation.pop("model")
    for status, response in responses.items():
        if status[:1] not in ("4", "5"):
            continue
        media = response.setdefault("content", {}).setdefault("application/json", {})
        media.setdefault("schema", dict(_ERROR_REF))
        common = COMMON_CODES.get(int(status), {})
        response.setdefault(ERROR_CODES_KEY, list(common))
        if not media.get("examples") and response[ERROR_CODES_KEY]:
            media["examples"] = {code: _example(code, common.get(code, "")) for code in response[ERROR_CODES_KEY]}
    if role is not None:
        operation[ROLE_KEY] = role
    operation["description"] = _full_description(operation, role)


def _full_description(operation: dict[str, Any], role: str | None) -> str:
    what = (operation.get("description") or "").strip()
    if role is not None:
        who = f"**Who may call:** a bearer token of the `{role}` role or higher (admin > operator > viewer)."
    elif operation.get("security"):
        who = "**Who may call:** any authenticated caller."
    else:
        who = "**Who may call:** anyone; no token is needed."
    failures = []
    for status, response in sorted(operation.get("responses", {}).items()):
        if status[:1] in ("4", "5"):
            codes = ", ".join(f"`{code}`" for code in response.get(ERROR_CODES_KEY, ())) or "see description"
            failures.append(f"{status} {codes}")
    parts = [what, who]
    if failures:
        parts.append("**Errors** (the contract's error body): " + "; ".join(failures) + ".")
    return "\n\n".join(part for part in parts if part)


def _uses_fastapi_validation_schema(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").rsplit("/", 1)[-1] in _FASTAPI_VALIDATION_SCHEMAS


def _add_event_schemas(schemas: dict[str, Any]) -> None:
    for name, model in sorted(_EVENT_MODELS.items()):
        if name in schemas:
            continue
        schema = model.model_json_schema(ref_template=SCHEMA_REF)
        for nested, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(nested, definition)
        schemas[name] = schema


def _required_role(dependant: Dependant) -> str | None:
    """The role the route's guard requires: the first dependency (at any depth) whose callable names one."""
    role = getattr(dependant.call, "openapi_role", None)
    if isinstance(role, str):
        return role
    for sub in dependant.dependencies:
        found = _required_role(sub)
        if found is not None:
            return found
    return None


def roles_by_operation(app: FastAPI) -> dict[tuple[str, str], str]:
    """``(path, method) -> role`` of every guarded operation of the app."""
    roles: dict[tuple[str, str], str] = {}
    for route in api_routes(app):
        declared = route.original_route
        assert isinstance(declared, APIRoute)
        role = _required_role(declared.dependant)
        if role is not None:
            for method in route.methods or ():
                roles[(route.path_format or "", method.lower())] = role
    return roles


def api_routes(app: FastAPI) -> list[RouteContext]:
    """Every operation of the app's document, as routed: its path with the prefixes of the routers that
    include it (``route.path_format``), and the route as declared (``route.original_route``)."""
    return [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.include_in_schema
    ]


def complete_document(document: dict[str, Any], roles: Mapping[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """Adds what follows from each operation's shape (see the module docstring) to a generated document, in
    place; returns it."""
    roles = roles or {}
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA_NAME, ErrorResponse.model_json_schema(ref_template=SCHEMA_REF))
    _add_event_schemas(schemas)
    for path, path_item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in path_item:
                _document(path_item[method], roles.get((path, method)))
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


# Kept for callers written before the roles and descriptions were added.
document_error_responses = complete_document


def install_openapi_documentation(app: FastAPI) -> None:
    """Makes ``app.openapi()`` (and ``/openapi.json``) the completed document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(generate(), roles_by_operation(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


install_error_documentation = install_openapi_documentation
