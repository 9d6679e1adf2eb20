"""The resolver's freshness check: a slow read of the directory's generation holds up only the thread
that makes it, never a lookup answered from the cache; a change is still seen once the read is done."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver


def test_a_slow_generation_read_does_not_hold_up_cached_lookups(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add("bob@acme.example", None)
    resolver = Resolver(directory, tmp_path / "mail", check_interval=3600)
    assert resolver.resolve("bob@acme.example").ok
    assert resolver.resolve("alice@acme.example").status == "unknown"  # cached too

    reading, go_on = threading.Event(), threading.Event()

    def slow_generation_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "directory_state" in statement and not go_on.is_set():
            reading.set()
            go_on.wait(30)

    directory.mailbox_add("alice@acme.example", None)  # moves the generation
    sa.event.listen(engine, "before_cursor_execute", slow_generation_read)
    resolver._checked_at = 0.0  # the check interval is over: the next lookup reads the generation
    found: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: found.update(alice=resolver.resolve("alice@acme.example")))
    reader.start()
    try:
        assert reading.wait(30)
        lookup = threading.Thread(target=lambda: found.update(bob=resolver.cached("bob@acme.example")))
        lookup.start()
        lookup.join(10)
        assert not lookup.is_alive(), "a cached lookup waited for the generation read"
        assert found["bob"] is not None and found["bob"].ok
    finally:
        go_on.set()
        reader.join()
    assert found["alice"].ok  # the change was seen: the cached "unknown" was dropped after the read
    assert [m.address for m in found["alice"].mailboxes] == ["alice@acme.example"]
