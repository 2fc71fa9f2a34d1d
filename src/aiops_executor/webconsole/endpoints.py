"""Serves the console's files and its sign-in session. The page reads and changes data through ``/api/v1`` like any
client; its session is the access token in an HttpOnly cookie (see ``auth.dependencies``), so that no script can
read the token and a reload of the page stays signed in.

Every response carries a strict Content-Security-Policy (scripts, styles and connections from this origin only,
no inline script, no framing), so that a topology or a model's output rendered by the page cannot run script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from aiops_executor.auth import service as auth_service
from aiops_executor.auth.dependencies import CONSOLE_HEADER, CONSOLE_SESSION_COOKIE
from aiops_executor.auth.rate_limits import AuthClientDep
from aiops_executor.auth.schemas import TokenRequest
from aiops_executor.core.deps import ContextDep, SessionDep
from aiops_executor.core.errors import ForbiddenError
from aiops_executor.core.http_errors import error_response

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_PATH = "/console/"
SESSION_PATH = "/console/session"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidated on every load (ETag): an upgraded service never runs with a stale mix of old and new modules.
    "Cache-Control": "no-cache",
}
# Module scripts are refused by browsers unless served as JavaScript; the rest by what they are.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    "": "text/plain; charset=utf-8",  # LICENSE files
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class StaticFile:
    content: bytes
    media_type: str
    etag: str


def _index(root: Path) -> dict[str, StaticFile]:
    """Every servable file by its path under ``/console/``, read once: the set is fixed at build time, and a
    lookup in it (never a path joined from the request) is what keeps a request inside the static folder."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if not path.is_file() or media_type is None:
            continue
        content = path.read_bytes()
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        files[path.relative_to(root).as_posix()] = StaticFile(content, media_type, etag)
    return files


FILES = _index(STATIC_DIR)


def _serve(request: Request, name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        response = error_response(404, "NOT_FOUND", f"the console has no file {name!r}")
        response.headers.update(SECURITY_HEADERS)
        return response
    headers = {**SECURITY_HEADERS, "ETag": found.etag}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.content, media_type=found.media_type, headers=headers)


def _require_console_header(request: Request) -> None:
    # The same rule as for the API with the cookie: a form of another origin cannot sign a browser in or out.
    if request.headers.get(CONSOLE_HEADER) != "1":
        raise ForbiddenError(f"the console's session needs the {CONSOLE_HEADER} header")


@router.post(SESSION_PATH)
async def open_session(
    request: Request,
    address: AuthClientDep,
    form: Annotated[TokenRequest, Form()],
    session: SessionDep,
    context: ContextDep,
) -> Response:
    """Signs in like ``POST /auth/token`` (same lockout and rate limit) and keeps the token in the cookie only."""
    _require_console_header(request)
    token = await auth_service.sign_in(session, context, form.username, form.password, address)
    response = JSONResponse({"expires_in": token.expires_in}, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        CONSOLE_SESSION_COOKIE,
        token.access_token,
        max_age=token.expires_in,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.delete(SESSION_PATH)
async def close_session(request: Request) -> Response:
    _require_console_header(request)
    response = Response(status_code=204)
    response.delete_cookie(CONSOLE_SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse(CONSOLE_PATH, status_code=308)


@router.get(CONSOLE_PATH)
async def console_index(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get(CONSOLE_PATH + "{name:path}")
async def console_file(name: str, request: Request) -> Response:
    return _serve(request, name)
