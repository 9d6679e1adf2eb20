"""What the master loads before it forks, and the check that the service user can read the rest.

Workers drop root right after the fork. Dovetail's own code and files are loaded here first, by
root, as gunicorn's ``preload_app`` does: every module of the package (the runners import what
each service runs; the other modules are imported on first use inside functions), the web
admin's templates and static files (read when :mod:`dovetail.web.assets` is imported) — the
Alembic migrations are run by the master itself. So a checkout in a folder only root can enter
(``/root/dovetail``, a ``mktemp -d``) serves with a virtualenv elsewhere.

Third-party libraries go on importing on first use (dnspython's record types, uvicorn's protocol
classes) and reading their own files (certifi's CA bundle), which cannot all be loaded ahead.
Their directories must be readable by the service user: the master refuses to start, in one line
naming the directory that user cannot enter, when they are not.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import dovetail

from ..privileges import check_user, first_closed

SKIP = ("dovetail.migrations",)  # Alembic reads these as scripts, in the master only


def preload() -> list[str]:
    """Import every module of the package (but the migration scripts); returns their names."""
    names = [m.name for m in pkgutil.walk_packages(dovetail.__path__, "dovetail.")
             if not m.name.startswith(SKIP)]
    for name in names:
        importlib.import_module(name)
    return names


def library_dirs() -> dict[Path, Path]:
    """Each directory a loaded module outside the package came from → the ``sys.path`` entry it is under."""
    package = Path(dovetail.__file__).resolve().parent
    entries = sorted({Path(p).resolve() for p in sys.path if p and Path(p).is_dir()},
                     key=lambda p: len(p.parts), reverse=True)
    out: dict[Path, Path] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        folder = Path(file).resolve().parent
        if folder in out or folder == package or package in folder.parents or not folder.is_dir():
            continue  # the package is loaded already; a zip member is not a folder to check
        out[folder] = next((e for e in entries if e == folder or e in folder.parents), folder)
    return out


def check_readable(user: str) -> None:
    """Refuse (RuntimeError, one line) when ``user`` cannot reach a library the services use."""
    uid, gid = check_user(user)
    for folder, entry in sorted(library_dirs().items()):
        closed = first_closed(folder, uid, gid)
        if closed is None:
            continue
        raise RuntimeError(
            f"server.user {user!r} cannot read the Python libraries in {entry}: it cannot enter {closed}; "
            f"install Dovetail's virtualenv where that user can read it (e.g. `make run VENV=/opt/dovetail/venv`) "
            f"or open the folder to it (chmod o+x {closed})")
