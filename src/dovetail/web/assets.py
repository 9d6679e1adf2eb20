"""The admin UI's templates and static files, served from memory.

The files themselves are read by :mod:`dovetail.web.assetfiles`, which the master imports before it
forks and drops privileges, so a web worker running as the service user serves pages even from an
installation that user cannot read (a clone under ``/root``). Starlette's ``StaticFiles`` and
Jinja's ``FileSystemLoader`` read the disk on each request or check it for changes; these few small
files need no more than a content type and an ETag, and templates only change with a new release.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass

import jinja2
from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from .assetfiles import STATIC_FILES, TEMPLATE_SOURCES


def template_environment() -> jinja2.Environment:
    """Every template of the admin, loaded now; autoescaped as Starlette's own environment is."""
    return jinja2.Environment(loader=jinja2.DictLoader(dict(TEMPLATE_SOURCES)), autoescape=True)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(name: str, body: bytes) -> Asset:
    media_type = mimetypes.guess_type(name)[0] or "text/plain"
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


ASSETS = {name: _asset(name, body) for name, body in STATIC_FILES.items()}

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
