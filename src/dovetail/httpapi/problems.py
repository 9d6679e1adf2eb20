"""RFC 9457 problem details: every API error is ``application/problem+json`` with its status.

FastAPI's own errors (404 for unknown paths, 405, 422 validation) are rewritten into the same
shape so a client has one error format to parse.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..log import get_logger

log = get_logger("web")

PROBLEM_TYPE = "about:blank"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem document; ``extra`` members are added to it."""

    def __init__(self, status: int, title: str = "", detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title or _phrase(status)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem_json(request: Request, status: int, title: str = "", detail: str = "",
                  headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_TYPE, "title": title or _phrase(status), "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


HtmlRenderer = Callable[[Request, int, str, str], Response | None]


def install(app: FastAPI, html: HtmlRenderer | None = None) -> None:
    """Register the handlers that turn every error into a problem document.

    ``html`` may answer instead for browser pages (an error page, or a redirect to the login).
    """

    def problem_response(request: Request, status: int, title: str = "", detail: str = "",  # noqa: F811
                         headers: dict[str, str] | None = None, **extra: Any) -> Response:
        if html is not None:
            page = html(request, status, title or _phrase(status), detail)
            if page is not None:
                return page
        return _problem_json(request, status, title, detail, headers, **extra)

    # Plain ``def`` handlers run in the threadpool: a browser's error page looks up the session in the database.
    @app.exception_handler(Problem)
    def _problem(request: Request, exc: Problem):  # noqa: ANN202
        return problem_response(request, exc.status, exc.title, exc.detail, headers=exc.headers or None,
                                **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException):  # noqa: ANN202
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _phrase(exc.status_code) else ""
        return problem_response(request, exc.status_code, detail=detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    def _validation(request: Request, exc: RequestValidationError):  # noqa: ANN202
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return problem_response(request, 422, "Unprocessable Content", "the request is not valid", errors=errors)

    @app.exception_handler(Exception)
    def _crash(request: Request, exc: Exception):  # noqa: ANN202
        log.error("request failed", path=request.url.path, error=repr(exc))
        return problem_response(request, 500, detail="internal error; see the server log")
