"""GET / and /static/*: the web page (plain HTML, CSS and JS shipped in the package, no build step).

The page talks to the public HTTP API only (/v1/models, /v1/<task>/solve, /v1/stats, /openapi.json),
so it is also a worked example of a client. Files are served from a fixed list, never from a path
the client names, and need no API key (the page asks for one when the API answers 401).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml"}
# No caching surprises after an upgrade: the browser revalidates (ETag / Last-Modified) on every load.
_HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = STATIC_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    """The page: pose a Sudoku, a maze or an ARC task, solve it, replay the steps."""
    return _file("index.html")


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static(name: str) -> FileResponse:
    return _file(name)
