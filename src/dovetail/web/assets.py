"""The admin UI's templates and static files, read into memory when this module is imported.

The master imports the web app before it forks and drops privileges, so a web worker running as
the service user serves pages even from an installation that user cannot read (a clone under
``/root``). Starlette's ``StaticFiles`` and Jinja's ``FileSystemLoader`` read the disk on each
request or check it for changes; these few small files need no more than a content type and an
ETag, and templates only change with a new release.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import jinja2
from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def template_environment() -> jinja2.Environment:
    """Every template of the admin, loaded now; autoescaped as Starlette's own environment is."""
    sources = {path.relative_to(TEMPLATES).as_posix(): path.read_text(encoding="utf-8")
               for path in sorted(TEMPLATES.rglob("*.html"))}
    return jinja2.Environment(loader=jinja2.DictLoader(sources), autoescape=True)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "text/plain"
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


ASSETS = {path.name: _load(path) for path in sorted(STATIC.iterdir()) if path.is_file()}

router = APIRouter(include_in_schema=False)


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
def static_file(name: str, request: Request) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise HTTPException(404)
    headers = {"ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
