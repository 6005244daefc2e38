"""API documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``) that work offline.

The Swagger UI and ReDoc bundles come from the ``fastapi-offline`` package (installed with the
service, never fetched from a CDN); the two pages and their start-up scripts are ours. Served
with the admin UI's discipline: no inline script, nothing from another origin, no framing. The
one relaxation is ``style-src 'unsafe-inline'``: both bundles set styles from script (ReDoc
inserts ``<style>`` elements), which cannot run code.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from markupsafe import escape

from app.errors import ProblemError

router = APIRouter(include_in_schema=False)

_BUNDLES = Path(str(files("fastapi_offline") / "static"))
_OURS = Path(__file__).resolve().parent.parent / "docs"
#: Every file the pages load, and where it lives.
ASSETS: dict[str, Path] = {
    "swagger-ui-bundle.js": _BUNDLES / "swagger-ui-bundle.js",
    "swagger-ui.css": _BUNDLES / "swagger-ui.css",
    "redoc.standalone.js": _BUNDLES / "redoc.standalone.js",
    "favicon.png": _BUNDLES / "favicon.png",
    "swagger-init.js": _OURS / "swagger-init.js",
    "redoc-init.js": _OURS / "redoc-init.js",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "worker-src 'self' blob:; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="{base}/docs/assets/favicon.png">
{head}
</head>
<body>
<div id="{element}" data-openapi-url="{base}/openapi.json"></div>
{scripts}
</body>
</html>
"""


def _page(request: Request, kind: Literal["swagger", "redoc"]) -> HTMLResponse:
    base = escape(str(request.scope.get("root_path", "")).rstrip("/"))
    asset = f"{base}/docs/assets"
    if kind == "swagger":
        head = f'<link rel="stylesheet" href="{asset}/swagger-ui.css">'
        scripts = ["swagger-ui-bundle.js", "swagger-init.js"]
        title, element = "realname API (Swagger UI)", "swagger-ui"
    else:
        head = ""
        scripts = ["redoc.standalone.js", "redoc-init.js"]
        title, element = "realname API (ReDoc)", "redoc"
    html = _PAGE.format(
        title=title,
        base=base,
        head=head,
        element=element,
        scripts="\n".join(f'<script src="{asset}/{name}"></script>' for name in scripts),
    )
    return HTMLResponse(html, headers={**HEADERS, "Cache-Control": "no-cache"})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return _page(request, "swagger")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _page(request, "redoc")


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise ProblemError("not_found")
    return FileResponse(path, headers={**HEADERS, "Cache-Control": "public, max-age=86400"})
