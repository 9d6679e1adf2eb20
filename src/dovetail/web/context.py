"""What the web routes share: config, engine, directory, data-directory layout and queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine

from ..config import Config
from ..datadir import Layout
from ..directory import Directory, DirectoryError
from ..httpapi.problems import Problem
from ..queue import Queue


@dataclass
class WebContext:
    cfg: Config
    engine: Engine
    directory: Directory
    layout: Layout
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def queue(self) -> Queue:
        """The queue of this data directory."""
        return Queue(self.layout.queue)


def get_ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def directory_problem(exc: DirectoryError) -> Problem:
    """Map a refused directory change to its HTTP status by what it says."""
    text = str(exc)
    if "already exists" in text or "still owns" in text or "still has" in text:
        return Problem(409, "Conflict", text)
    if text.startswith("no such") or "is not one of our domains" in text:
        return Problem(404, "Not Found", text)
    return Problem(422, "Unprocessable Content", text)
