"""``dovetail serve``: the master process in the foreground.

Before any worker starts, the master migrates the database, hands the data directory to the
service user, and loads every module of the package (:mod:`dovetail.master.preload`). Whatever
stops it there — a missing part, a folder the service user cannot read — is one line and exit 2;
a service that then cannot start makes the master stop with exit 1 and that service's reason.
A ``server.hostname`` that the world cannot use (``localhost``, no dot) is said once, as a warning,
and stays in ``dovetail status`` while the master runs with it.
"""

from __future__ import annotations

import os

from .config import Config, hostname_warning
from .log import configure_from, get_logger


def prepare_data_dir(cfg: Config) -> None:
    """Migrate the database once, in the master, and (as root) hand the mutable tree to the service user."""
    from .db import connect_and_migrate

    engine = connect_and_migrate(cfg)
    try:
        share_cluster_keys(cfg, engine)
        warn_pending_moves(cfg, engine)
    finally:
        engine.dispose()
    if os.geteuid() == 0:
        from .privileges import check_user, chown_tree, ensure_system_user, traversable_by

        ensure_system_user(cfg["server.user"])
        uid, gid = check_user(cfg["server.user"])
        root = cfg.data_dir.resolve()
        if not traversable_by(root.parent, uid, gid):
            raise RuntimeError(f"the data directory {root} is inside a folder server.user {cfg['server.user']!r} "
                               "cannot enter; move it or make its parents searchable (chmod o+x)")
        repair_dkim_keys(cfg, (uid, gid))
        repair_cert_store(cfg, (uid, gid))
        chown_tree(cfg.data_dir, uid, gid, skip=("tls",))
        from .master.preload import check_readable

        check_readable(cfg["server.user"])


def warn_pending_moves(cfg: Config, engine: object) -> None:
    """A tenant move that a kill or crash left unfinished is one warning line at start, with the command
    that carries it on (:mod:`dovetail.move.pending`)."""
    from sqlalchemy.engine import Engine

    from .move.pending import pending_notes

    assert isinstance(engine, Engine)
    for note in pending_notes(engine, str(cfg["node.name"] or "")):
        get_logger("master").warning(note)


def share_cluster_keys(cfg: Config, engine: object) -> None:
    """On a PostgreSQL cluster, check this node's master key against the cluster's and seal into the
    database the DKIM keys that are still files here (``dovetail.vault``); a node without the cluster's
    master key starts, says why in one line, and defers the mail that needs a sealed key."""
    from sqlalchemy.engine import Engine

    from .datadir import Layout
    from .outbound.keys import DkimKeys
    from .vault import Vault, VaultError, shares_keys

    assert isinstance(engine, Engine)
    if not shares_keys(engine):
        return
    log = get_logger("master")
    try:
        Vault(engine, cfg.data_dir).check()
        imported = DkimKeys(engine, Layout(cfg.data_dir).dkim).import_files()
    except VaultError as exc:
        log.warning(f"cluster keys: {exc}; DKIM signing and sealed credentials wait for it")
        return
    if imported:
        log.info(f"cluster keys: {imported} DKIM key file(s) sealed into the database for every node")


def repair_dkim_keys(cfg: Config, owner: tuple[int, int]) -> None:
    """Give DKIM key files made by root (``dovetail domain add`` before the key store gave them to the
    service user, or copied in by hand) back to that user, 0600 in 0700 folders, one line each:
    the services sign as that user, and a key they cannot read would hold its domain's mail."""
    from .datadir import Layout
    from .outbound.keys import repair_key_files

    for path, changes in repair_key_files(Layout(cfg.data_dir).dkim, owner):
        get_logger("master").warning(f"DKIM key store: {path}: {', '.join(changes)}; repaired")


def repair_cert_store(cfg: Config, owner: tuple[int, int]) -> None:
    """``tls/`` stays root's (the fallback key of ``init`` is root's only) but the service user's group may
    enter it; the certificate store inside (``tls/certs``, ``tls/acme``) is the service user's, 0600 in 0700
    folders, so workers load renewed certificates and the certs service writes them after the drop."""
    from .certs.store import repair_store

    tls = cfg.data_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    st = tls.stat()
    if st.st_gid != owner[1]:
        os.chown(tls, -1, owner[1])
    if st.st_mode & 0o050 != 0o050:
        os.chmod(tls, (st.st_mode & 0o7777) | 0o050)
    for sub in ("certs", "acme"):
        folder = tls / sub
        if not folder.exists():  # made now, for the service user: nothing to repair (or to warn about)
            folder.mkdir(mode=0o700)
            os.chown(folder, *owner)
    for path, changes in repair_store(tls, owner):
        get_logger("master").warning(f"certificate store: {path}: {', '.join(changes)}; repaired")


def load_services() -> None:
    """Import everything the services run, now, before any worker drops privileges (RuntimeError with
    the missing module, one line)."""
    from .master.preload import preload

    try:
        preload()
    except ImportError as exc:
        raise RuntimeError(f"cannot load {exc.name or 'a module'} ({exc}); reinstall Dovetail "
                           "(pip install -e . or make install)") from None


def run(cfg: Config) -> int:
    from .master.pidfile import AlreadyRunning

    try:
        configure_from(cfg)
    except OSError as exc:
        get_logger("master").error("cannot open the log file", file=str(exc.filename), error=exc.strerror)
        return 2
    try:
        load_services()
    except RuntimeError as exc:
        get_logger("master").error(str(exc))
        return 2
    from .master.supervisor import Master

    try:
        master = Master(cfg)
        master.pidfile.acquire()
    except AlreadyRunning as exc:
        get_logger("master").error(str(exc))
        return 2
    try:
        try:
            prepare_data_dir(cfg)
        except RuntimeError as exc:
            get_logger("master").error(str(exc))
            return 2
        warning = hostname_warning(cfg.hostname)
        if warning:
            get_logger("master").warning(warning)
        from .outbound.unsubscribe import one_click_off_reason

        one_click_off = one_click_off_reason(cfg)
        if one_click_off:
            get_logger("master").warning(one_click_off)
        try:
            return master.run()
        except OSError as exc:  # a listener cannot bind: say which, no traceback
            get_logger("master").error(str(exc.strerror or exc))
            return 2
    finally:
        master.pidfile.release()
