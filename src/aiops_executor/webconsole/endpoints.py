"""Serves the console's files. Nothing here touches the API's data: the page talks to ``/api/v1`` like any client.

Every response carries a strict Content-Security-Policy (scripts, styles and connections from this origin only,
no inline script, no framing), so that a topology or a model's output rendered by the page cannot run script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from aiops_executor.core.errors import error_response

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_PATH = "/console/"

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


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse(CONSOLE_PATH, status_code=308)


@router.get(CONSOLE_PATH)
async def console_index(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get(CONSOLE_PATH + "{name:path}")
async def console_file(name: str, request: Request) -> Response:
    return _serve(request, name)
