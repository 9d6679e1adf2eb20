"""``dovetail serve``: the master process in the foreground."""

from __future__ import annotations

import os

from .config import Config
from .log import configure_from, get_logger


def prepare_data_dir(cfg: Config) -> None:
    """Migrate the database once, in the master, and (as root) hand the mutable tree to the service user."""
    from .db import connect_and_migrate

    connect_and_migrate(cfg).dispose()
    if os.geteuid() == 0:
        from .master.privileges import check_user, chown_tree, ensure_system_user, traversable_by

        ensure_system_user(cfg["server.user"])
        uid, gid = check_user(cfg["server.user"])
        root = cfg.data_dir.resolve()
        if not traversable_by(root.parent, uid, gid):
            raise RuntimeError(f"the data directory {root} is inside a folder server.user {cfg['server.user']!r} "
                               "cannot enter; move it or make its parents searchable (chmod o+x)")
        chown_tree(cfg.data_dir, uid, gid, skip=("tls",))


def run(cfg: Config) -> int:
    from .master.pidfile import AlreadyRunning
    from .master.supervisor import Master

    try:
        configure_from(cfg)
    except OSError as exc:
        get_logger("master").error("cannot open the log file", file=str(exc.filename), error=exc.strerror)
        return 2
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
        try:
            return master.run()
        except OSError as exc:  # a listener cannot bind: say which, no traceback
            get_logger("master").error(str(exc.strerror or exc))
            return 2
    finally:
        master.pidfile.release()
