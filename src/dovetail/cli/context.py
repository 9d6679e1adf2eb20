"""What every CLI verb needs: the data directory, its config, the database and the directory."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from .. import config as config_mod
from ..datadir import Layout

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """Bad input from the operator: printed as one line, exit status 2, no traceback."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


@dataclass
class Context:
    data_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir)

    def require_init(self) -> None:
        if not self.layout.config_file.exists():
            fail(f"{self.data_dir} is not a Dovetail data directory (run `dovetail --data-dir {self.data_dir} init`)")

    @cached_property
    def config(self) -> config_mod.Config:
        self.require_init()
        return config_mod.load(self.data_dir)

    @cached_property
    def engine(self) -> Engine:
        from ..db import connect_and_migrate

        return connect_and_migrate(self.config)

    @cached_property
    def directory(self):  # noqa: ANN201 - avoids importing SQLAlchemy-heavy modules for every verb
        from ..directory import Directory

        return Directory(self.engine)

    @cached_property
    def resolver(self):  # noqa: ANN201
        from ..directory import Resolver
        from ..directory.srs import Srs
        from ..runtime import srs_max_age_days

        cfg = self.config
        return Resolver(self.directory, self.layout.mail, depth_limit=cfg["directory.alias_depth_limit"],
                        default_postmaster=cfg["directory.default_postmaster"], check_interval=0,
                        srs=Srs.for_data_dir(self.data_dir, max_age_days=srs_max_age_days(cfg), engine=self.engine))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def emit_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)
