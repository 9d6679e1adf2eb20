"""Objects a service process builds once after the fork: database engine, directory, resolver, queue."""

from __future__ import annotations

from functools import cached_property

from .config import Config
from .datadir import Layout


def srs_max_age_days(cfg: Config) -> int:
    """``forwarding.srs_max_age`` in whole days (SRS addresses carry the day they were made)."""
    return max(1, int(cfg["forwarding.srs_max_age"] // 86400))


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.layout = Layout(cfg.data_dir)

    @cached_property
    def engine(self):  # noqa: ANN201
        from .db import make_engine

        return make_engine(self.cfg.database_url)

    @cached_property
    def directory(self):  # noqa: ANN201
        from .directory import Directory

        return Directory(self.engine)

    @cached_property
    def resolver(self):  # noqa: ANN201
        from .directory import Resolver
        from .directory.srs import Srs

        cfg = self.cfg
        return Resolver(self.directory, self.layout.mail, depth_limit=cfg["directory.alias_depth_limit"],
                        default_postmaster=cfg["directory.default_postmaster"],
                        check_interval=cfg["directory.cache_check_interval"],
                        srs=Srs.for_data_dir(cfg.data_dir, max_age_days=srs_max_age_days(cfg), engine=self.engine))

    @cached_property
    def queue(self):  # noqa: ANN201
        from .queue import Queue

        return Queue(self.layout.queue)
