from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.queue.helpers_queue import envelope, message

from dovetail.delivery import MailboxTarget, MaildirConfig, MaildirDeliveryAgent, RecipientRejected, Rejection
from dovetail.queue import Queue, QueuedMessage, QueueRecipient
from dovetail.storage import open_storage

NAME_RE = re.compile(r"^(\d+)\.V([0-9A-Z]+)R(\d+)\.([^/,:]+),S=(\d+),W=(\d+)$")


def queued(
    tmp_path: Path, data: bytes, rcpts: tuple[str, ...] = ("bob@example.com",), sender: str = "alice@example.org"
) -> QueuedMessage:
    q = Queue(tmp_path / "queue")
    qid = q.inject(envelope(sender=sender, rcpts=rcpts), data)
    return QueuedMessage(qid, q.path("incoming", qid))


def resolver(root: Path, quota: int | None = None):  # noqa: ANN201
    def resolve(address: str) -> list[MailboxTarget] | Rejection:
        local, _, domain = address.partition("@")
        if local.startswith("nobody"):
            return Rejection()
        if local == "boom":
            raise RuntimeError("directory down")
        if local == "gone":
            raise RecipientRejected("mailbox disabled", "5.2.1")
        base, _, detail = local.partition("+")
        return [MailboxTarget(f"{base}@{domain}", root / domain / base, quota, detail or None)]

    return resolve


def deliver(agent: MaildirDeliveryAgent, msg: QueuedMessage) -> list:  # noqa: ANN001
    return asyncio.run(agent.deliver(msg, msg.envelope.recipients))


def files(maildir: Path, sub: str = "new") -> list[Path]:
    return sorted((maildir / sub).iterdir()) if (maildir / sub).exists() else []


def test_delivery_writes_maildir_file_as_dovecot_expects(tmp_path: Path) -> None:
    data = message(body="line one\r\nline two\r\n")
    msg = queued(tmp_path, data, rcpts=("bob+news@example.com",))
    agent = MaildirDeliveryAgent(resolver(tmp_path / "mail"))
    (res,) = deliver(agent, msg)
    assert (res.status, res.dsn_code, res.reason, res.relay) == ("sent", "2.0.0", "delivered to maildir", "virtual")
    box = tmp_path / "mail" / "example.com" / "bob"
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
    assert files(box, "tmp") == [] and files(box, "cur") == []
    (path,) = files(box)
    m = NAME_RE.match(path.name)
    assert m, path.name
    assert m.group(2) == msg.queue_id and m.group(3) == "0"
    content = path.read_bytes()
    expected = b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.com\n" + data.replace(b"\r\n", b"\n")
    assert content == expected
    assert int(m.group(5)) == len(content) == path.stat().st_size
    assert int(m.group(6)) == len(content) + content.count(b"\n")
    assert path.stat().st_mode & 0o777 == 0o600


def test_one_copy_per_mailbox_and_duplicates_once(tmp_path: Path) -> None:
    msg = queued(tmp_path, message(), rcpts=("bob@example.com", "carol@example.com", "bob+x@example.com"))
    agent = MaildirDeliveryAgent(resolver(tmp_path / "mail"))
    results = deliver(agent, msg)
    assert [r.status for r in results] == ["sent", "sent", "sent"]
    bob = files(tmp_path / "mail" / "example.com" / "bob")
    carol = files(tmp_path / "mail" / "example.com" / "carol")
    assert len(bob) == 1 and len(carol) == 1
    assert b"Delivered-To: carol@example.com\n" in carol[0].read_bytes()
    assert bob[0].stat().st_ino != carol[0].stat().st_ino


def test_unknown_and_failing_lookups(tmp_path: Path) -> None:
    msg = queued(tmp_path, message(), rcpts=("nobody@example.com", "boom@example.com", "gone@example.com"))
    results = deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail")), msg)
    got = [(r.status, r.dsn_code) for r in results]
    assert got == [("bounced", "5.1.1"), ("deferred", "4.3.0"), ("bounced", "5.2.1")]
    assert not (tmp_path / "mail").exists()


def test_quota_defers_or_bounces(tmp_path: Path) -> None:
    box = tmp_path / "mail" / "example.com" / "bob"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
        (box / ".Sent" / sub).mkdir(parents=True)
    (box / "cur" / "1.M1P1Q1.h,S=4000,W=4100:2,S").write_bytes(b"x")
    (box / ".Sent" / "cur" / "2.M1P1Q1.h,S=3000:2,S").write_bytes(b"x")
    (box / "new" / "3.M1P1Q1.h").write_bytes(b"y" * 500)
    assert open_storage(box, create=False).usage().bytes == 7500

    msg = queued(tmp_path, message(body="z" * 1000))
    (res,) = deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail", quota=8000)), msg)
    assert (res.status, res.dsn_code) == ("deferred", "4.2.2")
    assert "mailbox full" in res.reason
    cfg = MaildirConfig(quota_bounce=True)
    (res,) = deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail", quota=8000), cfg), msg)
    assert (res.status, res.dsn_code) == ("bounced", "5.2.2")
    assert len(files(box)) == 1

    agent = MaildirDeliveryAgent(resolver(tmp_path / "mail", quota=20_000))
    assert deliver(agent, msg)[0].status == "sent"
    assert open_storage(box, create=False).usage().bytes > 7500 + 1000
    (box / "cur" / "1.M1P1Q1.h,S=4000,W=4100:2,S").unlink()
    assert open_storage(box, create=False).usage().bytes < 7500


def test_loop_detection(tmp_path: Path) -> None:
    hops = b"".join(b"Received: from h%d by h%d\r\n" % (i, i + 1) for i in range(51))
    msg = queued(tmp_path, hops + message())
    (res,) = deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail")), msg)
    assert (res.status, res.dsn_code) == ("bounced", "5.4.6")
    assert "mail forwarding loop" in res.reason

    ok = queued(tmp_path, hops[: hops.index(b"Received: from h50")] + message())
    assert deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail")), ok)[0].status == "sent"

    data = b"Delivered-To: <Bob@Example.com>\r\n" + message()
    looped = queued(tmp_path, data, rcpts=("bob@example.com", "carol@example.com"))
    results = deliver(MaildirDeliveryAgent(resolver(tmp_path / "other")), looped)
    assert [(r.status, r.dsn_code) for r in results] == [("bounced", "5.4.6"), ("sent", "2.0.0")]
    assert "mail forwarding loop for bob@example.com" in results[0].reason
    assert not (tmp_path / "other" / "example.com" / "bob").exists()


def test_enospc_on_tiny_tmpfs_defers_and_leaves_nothing(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        msg = queued(tmp_path, message(body="x" * 200_000 + "\r\n"))
        (res,) = deliver(MaildirDeliveryAgent(lambda a: [MailboxTarget(a, mnt / "box")]), msg)
        assert (res.status, res.dsn_code) == ("deferred", "4.3.1")
        assert "mail system full" in res.reason
        assert files(mnt / "box") == [] and files(mnt / "box", "tmp") == []
        small = queued(tmp_path, message())
        (res,) = deliver(MaildirDeliveryAgent(lambda a: [MailboxTarget(a, mnt / "box")]), small)
        assert res.status == "sent" and len(files(mnt / "box")) == 1
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


FSIZE_SCRIPT = """
import asyncio, resource, signal, sys
from pathlib import Path
from dovetail.delivery import MaildirDeliveryAgent, MailboxTarget
from dovetail.queue import QueuedMessage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
qpath, box = Path(sys.argv[1]), Path(sys.argv[2])
with QueuedMessage(qpath.name, qpath, writable=False) as msg:
    (res,) = asyncio.run(MaildirDeliveryAgent(lambda a: [MailboxTarget(a, box)]).deliver(msg, msg.envelope.recipients))
print(res.status, res.dsn_code, res.reason)
"""


def test_io_error_from_file_size_limit_defers(tmp_path: Path) -> None:
    msg = queued(tmp_path, message(body="y" * 300_000 + "\r\n"))
    box = tmp_path / "box"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    out = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, str(msg.path), str(box)], capture_output=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    status, code, reason = out.stdout.decode().split(" ", 2)
    assert (status, code) == ("deferred", "4.3.0")
    assert "File too large" in reason
    assert files(box) == [] and files(box, "tmp") == []


def test_agent_in_queue_manager_logs_postfix_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tests.queue.helpers_queue import wait_until, with_manager

    from dovetail.queue import QueueConfig

    caplog.set_level(logging.INFO)
    q = Queue(tmp_path / "queue")
    agent = MaildirDeliveryAgent(resolver(tmp_path / "mail"))
    env = envelope(rcpts=("bob+tag@example.com", "nobody@example.com"))
    env.recipients[0] = QueueRecipient("bob+tag@example.com", original="Bob@Example.com")

    async def body(_mgr: object) -> None:
        qid = await asyncio.to_thread(q.inject, env, message())
        alice = tmp_path / "mail" / "example.org" / "alice"
        await wait_until(lambda: q.locate(qid) is None and len(files(alice)) == 1)
        body.qid = qid  # type: ignore[attr-defined]

    asyncio.run(with_manager(q, agent, body, QueueConfig(scan_interval=3600)))
    qid = body.qid  # type: ignore[attr-defined]
    text = caplog.text
    assert f"{qid}: to=<bob+tag@example.com>, orig_to=<Bob@Example.com>, relay=virtual, delay=" in text
    assert "dsn=2.0.0, status=sent (delivered to maildir)" in text
    assert f"{qid}: to=<nobody@example.com>, relay=virtual" in text and "status=bounced (user unknown)" in text
    assert f"{qid}: removed" in text
    assert len(files(tmp_path / "mail" / "example.com" / "bob")) == 1
    # The bounce for nobody@ went back to alice@example.org through the same agent.
    assert len(files(tmp_path / "mail" / "example.org" / "alice")) == 1


def test_repeated_attempt_after_a_crash_writes_no_second_copy(tmp_path: Path) -> None:
    """The window Postfix leaves open (file written, queue not yet updated) is closed by the name."""
    msg = queued(tmp_path, message(body="once\r\n"), rcpts=("bob@example.com", "carol@example.com"))
    agent = MaildirDeliveryAgent(resolver(tmp_path / "mail"))
    first = deliver(agent, msg)
    again = deliver(agent, msg)  # as the queue manager does when the status record was lost
    assert [r.status for r in first] == [r.status for r in again] == ["sent", "sent"]
    boxes = [tmp_path / "mail" / "example.com" / name for name in ("bob", "carol")]
    assert [len(files(box)) for box in boxes] == [1, 1]  # one per recipient, not per attempt
    # a reader (IMAP) moved the copies to cur/ before the retry: a later attempt still finds them
    for box in boxes:
        for path in files(box):
            path.rename(box / "cur" / (path.name + ":2,S"))
    msg.envelope.attempts = 1
    deliver(agent, msg)
    assert [(len(files(box)), len(files(box, "cur"))) for box in boxes] == [(0, 1), (0, 1)]


@pytest.mark.parametrize("size", [200, 300_000])  # read and converted once / streamed per copy
def test_copies_for_many_mailboxes_differ_only_in_their_own_lines(tmp_path: Path, size: int) -> None:
    body = ("x" * 70 + "\r\n") * (size // 72) + "bare\rCR kept\r\n"
    data = message(body=body)
    rcpts = tuple(f"user{i}@example.com" for i in range(5))
    msg = queued(tmp_path, data, rcpts=rcpts)
    results = deliver(MaildirDeliveryAgent(resolver(tmp_path / "mail")), msg)
    assert [r.status for r in results] == ["sent"] * 5
    expected = data.replace(b"\r\n", b"\n")
    for rcpt in rcpts:
        box = tmp_path / "mail" / "example.com" / rcpt.partition("@")[0]
        (path,) = files(box)
        copy = path.read_bytes()
        assert copy == f"Return-Path: <alice@example.org>\nDelivered-To: {rcpt}\n".encode() + expected
        lines = copy.count(b"\n")
        assert path.name.endswith(f",S={len(copy)},W={len(copy) + lines}")
        assert files(box, "tmp") == []
