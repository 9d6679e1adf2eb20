"""What the master loads before it forks, and the check that the service user can read the rest.

Workers drop root right after the fork. Dovetail's own code and files are loaded here first, by
root, as gunicorn's ``preload_app`` does: every module of the package (the runners import what
each service runs; the other modules are imported on first use inside functions), the web
admin's templates and static files (read when :mod:`dovetail.web.assetfiles` is imported) — the
Alembic migrations are run by the master itself. So a checkout in a folder only root can enter
(``/root/dovetail``, a ``mktemp -d``) serves with a virtualenv elsewhere.

Every module but those of :data:`HELD`: the web stack (FastAPI, Starlette, pydantic, Jinja,
uvicorn), the ACME client and the command line are some 30 MB that a forked worker carries in its
memory whether it uses them or not, and only the web, transfer and certs workers (and the CLI) do.
Their compiled code is read here instead and kept in memory (:class:`HeldCode`, a finder in front
of ``sys.meta_path``): the worker that needs them runs them after the fork, from that code, without
reading the package's folder. An IMAP worker starts without them.

Third-party libraries go on importing on first use (dnspython's record types, uvicorn's protocol
classes) and reading their own files (certifi's CA bundle), which cannot all be loaded ahead.
Their directories must be readable by the service user: the master refuses to start, in one line
naming the directory that user cannot enter, when they are not.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import dovetail

from ..privileges import check_user, first_closed

SKIP = ("dovetail.migrations",)  # Alembic reads these as scripts, in the master only
# Modules (and packages, with everything under them) run only by the workers that need them: their
# code is held, not run, by the master (see the module docstring). ``dovetail.web.counters`` and
# ``dovetail.web.schema`` are imported by the runners (every worker counts its mail).
HELD = ("dovetail.web", "dovetail.httpapi", "dovetail.move.endpoint", "dovetail.move.mover", "dovetail.move.purge",
        "dovetail.outbound.api", "dovetail.replies.api", "dovetail.certs.order", "dovetail.certs.renew", "dovetail.cli")
# What stays out of the master's memory because of that (checked by the tests).
HELD_LIBRARIES = ("fastapi", "starlette", "pydantic", "jinja2", "uvicorn", "acme", "josepy")
_RUN_ANYWAY = ("dovetail.web.assetfiles",)  # root reads the templates and static files


def _held(name: str) -> bool:
    if name in _RUN_ANYWAY:
        return False
    return any(name == h or name.startswith(h + ".") for h in HELD)


class HeldCode(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Modules of the package the master read but did not run: a worker imports them from the code
    kept here (marshalled, as in a ``.pyc``), whatever the service user may read on disk."""

    def __init__(self) -> None:
        self.code: dict[str, tuple[bytes, str, bool]] = {}  # name -> (code, file, is a package)

    def hold(self, info: pkgutil.ModuleInfo) -> None:
        spec = info.module_finder.find_spec(info.name, None)  # type: ignore[call-arg]
        if spec is None or spec.loader is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return
        code = spec.loader.get_code(info.name)
        if code is not None and spec.origin is not None:
            self.code[info.name] = (marshal.dumps(code), spec.origin, info.ispkg)

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        held = self.code.get(fullname)
        if held is None:
            return None
        _code, origin, is_package = held
        spec = importlib.util.spec_from_loader(fullname, self, origin=origin, is_package=is_package)
        if spec is None:
            return None
        spec.has_location = True  # __file__ as if read from the package's folder
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(marshal.loads(self.code[module.__name__][0]), module.__dict__)  # noqa: S102 - our own code


HELD_CODE = HeldCode()


def preload() -> list[str]:
    """Import every module of the package (but the migration scripts and the :data:`HELD` ones, whose
    code is read and kept for the workers that run them); returns the names imported."""
    names = []
    for info in _walk():
        if _held(info.name):
            HELD_CODE.hold(info)
        else:
            names.append(info.name)
    if HELD_CODE not in sys.meta_path:
        sys.meta_path.insert(0, HELD_CODE)
    for name in names:
        importlib.import_module(name)
    return names


def _walk() -> list[pkgutil.ModuleInfo]:
    """Every module of the package, but the migration scripts; a held package is not imported to
    look inside it (as ``pkgutil.walk_packages`` would): its folder is listed."""
    out: list[pkgutil.ModuleInfo] = []
    todo: list[tuple[list[str], str]] = [(list(dovetail.__path__), "dovetail.")]
    while todo:
        path, prefix = todo.pop()
        for info in pkgutil.iter_modules(path, prefix):
            if info.name.startswith(SKIP):
                continue
            out.append(info)
            if info.ispkg:
                todo.append(([os.path.join(path[0], info.name.rpartition(".")[2])], info.name + "."))
    return out


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
