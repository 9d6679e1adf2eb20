"""`dovetail queue` verbs against a real on-disk queue (postqueue/postsuper behaviour)."""

from __future__ import annotations

import json
from pathlib import Path

from dovetail.queue import Envelope, Queue, QueueRecipient

from .test_cli import ok, run


def _queue_with_two(root: Path) -> tuple[Queue, list[str]]:
    ok(root, "init")
    q = Queue(root / "queue")
    ids = [q.inject(Envelope(sender=f"s{i}@ext.example", recipients=[QueueRecipient(f"r{i}@acme.example")]),
                    f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode()) for i in range(2)]
    return q, ids


def test_list_show_hold_release_delete(tmp_path: Path) -> None:
    root = tmp_path / "d"
    q, ids = _queue_with_two(root)
    listed = json.loads(ok(root, "queue", "list", "--json"))
    assert sorted(e["id"] for e in listed) == sorted(ids)
    assert {e["sender"] for e in listed} == {"s0@ext.example", "s1@ext.example"}
    text = ok(root, "queue", "list")
    assert ids[0] in text and "r0@acme.example" in text and "2 Requests" in text
    shown = ok(root, "queue", "show", ids[0])
    assert "sender: s0@ext.example" in shown and "body 0" in shown
    assert json.loads(ok(root, "queue", "show", ids[1], "--json"))["message"].endswith("body 1\r\n")
    ok(root, "queue", "hold", ids[0])
    assert {e["id"]: e["state"] for e in json.loads(ok(root, "queue", "list", "--json"))}[ids[0]] == "hold"
    assert ids[0] + "!" in ok(root, "queue", "list")
    ok(root, "queue", "release", "ALL")
    assert {e["state"] for e in json.loads(ok(root, "queue", "list", "--json"))} == {"incoming"}
    ok(root, "queue", "delete", ids[1])
    assert [e["id"] for e in json.loads(ok(root, "queue", "list", "--json"))] == [ids[0]]
    ok(root, "queue", "delete", "ALL")
    assert "Mail queue is empty" in ok(root, "queue", "list")


def test_bad_queue_ids_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _queue_with_two(root)
    for args in (["queue", "show", "../../etc/passwd"], ["queue", "show", "ABCDEF0123456789"],
                 ["queue", "hold", "nonsense!"], ["queue", "delete", "ABCDEF0123456789"]):
        out = run(root, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr


def test_flush_makes_deferred_due(tmp_path: Path) -> None:
    root = tmp_path / "d"
    q, ids = _queue_with_two(root)
    assert q.move(ids[0], "incoming", "deferred")
    out = json.loads(ok(root, "queue", "flush", "--json"))
    assert out == {"flushed": 1}
