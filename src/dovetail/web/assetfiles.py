"""The admin UI's template sources and static files as bytes, read when this module is imported.

Apart from :mod:`dovetail.web.assets` (which serves them, with FastAPI and Jinja) so that the master
can read them as root before it forks without loading the web stack: the web worker, running as the
service user, imports the rest after the fork and serves pages even from an installation that user
cannot read (a clone under ``/root``).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

TEMPLATE_SOURCES: dict[str, str] = {path.relative_to(TEMPLATES).as_posix(): path.read_text(encoding="utf-8")
                                    for path in sorted(TEMPLATES.rglob("*.html"))}
STATIC_FILES: dict[str, bytes] = {path.name: path.read_bytes() for path in sorted(STATIC.iterdir()) if path.is_file()}
