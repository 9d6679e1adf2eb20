"""The transfer endpoint of a mailbox node (``listen.transfer``): what a tenant move pulls from the old home.

HTTP between nodes, authenticated by the cluster's shared secret (``Authorization: Bearer <cluster.secret>``,
compared in constant time); with no secret configured every request is refused. It serves:

- ``GET /cluster/v1/ping`` — the node's name, so a mover checks it reaches the node it means;
- ``POST /cluster/v1/tenants/{tenant}/export`` — the tar stream of the tenant's Maildirs
  (:mod:`dovetail.storage.transfer`), given the files the mover holds already (``{"have": {path: size}}``);
  only for a tenant homed here;
- ``GET /cluster/v1/tenants/{tenant}/usage`` — what each of the tenant's mailboxes holds (bytes and messages,
  as the quota counts them), for the API and web pages of the other nodes: only the home node can count;
- ``POST /cluster/v1/tenants/{tenant}/release`` — once the directory says the tenant lives elsewhere, its
  folder here is set aside under ``mail/.moved-away/<tenant>.<move id>`` (kept for the operator to delete
  when satisfied: nothing is removed by the move itself).

The directory, not the caller, decides: export needs the tenant homed here, release needs it homed
elsewhere, so a stale or hostile request cannot take a live tenant's mail away.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine

from ..directory.addresses import AddressError
from ..directory.lookups import tenant_home, tenant_ref
from ..directory.moves import MoveStore
from ..durable import fsync_dir
from ..storage import open_storage
from ..storage.transfer import export_tree

MOVED_AWAY = ".moved-away"
STAGING = ".moving"
MAX_HAVE = 5_000_000  # files a mover may list as held (a tenant with more is out of this design's range)


def tenant_folder(mail_root: Path, tenant: str) -> Path:
    """``mail/<tenant>``: every Maildir of the tenant lives below it."""
    if not tenant or tenant.startswith(".") or "/" in tenant or tenant in ("..",):
        raise ValueError(f"bad tenant name {tenant!r}")
    return mail_root / tenant


def tenant_usage(root: Path) -> dict[str, dict[str, int]]:
    """``{"local@domain": {"bytes": n, "messages": m}}`` for every Maildir under ``mail/<tenant>``."""
    found: dict[str, dict[str, int]] = {}
    for domain in _subfolders(root):
        for local in _subfolders(domain):
            used = open_storage(local, create=False).usage()
            found[f"{local.name}@{domain.name}"] = {"bytes": used.bytes, "messages": used.messages}
    return found


def _subfolders(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def transfer_app(engine: Engine, mail_root: Path, here: str, secret: str) -> FastAPI:
    """The endpoint's application (served by the ``transfer`` service)."""
    app = FastAPI(title="Dovetail transfer endpoint", docs_url=None, redoc_url=None, openapi_url=None)
    moves = MoveStore(engine)
    here = here.strip().lower()

    def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        if not secret:
            raise HTTPException(503, "cluster.secret is not set on this node: it takes no node-to-node requests")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), secret.encode()):
            raise HTTPException(401, "wrong or missing cluster secret", headers={"WWW-Authenticate": "Bearer"})

    def homed(tenant: str) -> tuple[str, str | None]:
        """The tenant's name and home node, or 404."""
        try:
            with engine.connect() as conn:
                ref = tenant_ref(conn, tenant)
                home = tenant_home(conn, ref.name) if ref is not None else None
        except AddressError:
            ref = None
        if ref is None:
            raise HTTPException(404, f"no such tenant {tenant!r}")
        return ref.name, home

    @app.get("/cluster/v1/ping", dependencies=[Depends(authorised)])
    def ping() -> dict[str, Any]:
        return {"node": here}

    @app.post("/cluster/v1/tenants/{tenant}/export", dependencies=[Depends(authorised)])
    def export(tenant: str, have: Annotated[dict[str, int], Body(embed=True)]) -> StreamingResponse:
        name, home = homed(tenant)
        if home != here:
            raise HTTPException(409, f"tenant {name} is homed on {home}, not on this node ({here})")
        if len(have) > MAX_HAVE:
            raise HTTPException(413, "too many files listed")
        root = tenant_folder(mail_root, name)
        return StreamingResponse(export_tree(root, have), media_type="application/x-tar")

    @app.get("/cluster/v1/tenants/{tenant}/usage", dependencies=[Depends(authorised)])
    def usage(tenant: str) -> dict[str, Any]:
        name, home = homed(tenant)
        if home != here:
            raise HTTPException(409, f"tenant {name} is homed on {home}, not on this node ({here})")
        return {"node": here, "mailboxes": tenant_usage(tenant_folder(mail_root, name))}

    @app.post("/cluster/v1/tenants/{tenant}/release", dependencies=[Depends(authorised)])
    def release(tenant: str, move: Annotated[int, Body(embed=True)]) -> dict[str, Any]:
        name, home = homed(tenant)
        if home == here:
            raise HTTPException(409, f"tenant {name} is still homed on this node: its mail stays")
        record = moves.find(move)
        if (record is None or record.tenant != name or record.source != here
                or record.state not in ("switched", "cleaned")):
            raise HTTPException(409, f"move {move} is not a switched move of {name} away from {here}")
        root = tenant_folder(mail_root, name)
        kept = mail_root / MOVED_AWAY / f"{name}.{move}"
        if root.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root, kept)
            fsync_dir(mail_root)
        return {"kept": str(kept) if kept.exists() else None}

    return app

