"""Milters at a running MX: a scripted filter on loopback decides before the client hears 250."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dovetail.intake.contentfilter import ContentFilter
from dovetail.intake.milter import parse_milter
from dovetail.intake.milter import protocol as p
from dovetail.intake.milter.client import Timeouts
from tests.master.harness import free_port

from .milter_peer import MilterPeer, Script, addheader, chgheader, insheader, reply, replycode
from .mxstack import OUR_ID, Mx, make_mx, message


@pytest.fixture
def mx(tmp_path: Path) -> Mx:
    return make_mx(tmp_path)


def _filter(*specs: str, default: str = "tempfail", timeouts: Timeouts | None = None) -> ContentFilter:
    return ContentFilter(OUR_ID, OUR_ID, milters=[parse_milter(s) for s in specs], milter_default_action=default,
                         timeouts=timeouts or Timeouts(2, 2, 2))


def _run(mx: Mx, script: Script, msg: bytes | None = None, **kw: object) -> tuple[tuple[int, str], MilterPeer]:
    async def go() -> tuple[tuple[int, str], MilterPeer]:
        peer = await MilterPeer(script).start()
        try:
            return await mx.asend(msg or message(), _filter(peer.spec, **kw)), peer  # type: ignore[arg-type]
        finally:
            await peer.stop()
    return asyncio.run(go())


def test_accepted_message_went_through_every_stage(mx: Mx) -> None:
    (code, _), peer = _run(mx, Script(), message(body="line one\r\nline two\r\n"))
    assert code == 250
    stages = peer.stages()
    assert stages[:5] == ["connect", "helo", "mail", "rcpt", "data"]
    assert stages[-3:] == ["eoh", "body", "eom"]
    received = dict((n, d) for n, d in peer.received if n != "header")
    assert received["mail"] == b"<alice@sender.test>\0"
    assert received["rcpt"] == b"<bob@acme.example>\0"
    assert received["helo"] == b"mail.sender.test\0"
    assert received["body"] == b"line one\r\nline two\r\n"
    headers = [d.split(b"\0")[0] for n, d in peer.received if n == "header"]
    assert b"Subject" in headers and b"Received" in headers
    assert any(b"{mail_addr}\0alice@sender.test" in m for m in peer.macros)
    assert len(mx.queued()) == 1


def test_steps_the_filter_declines_are_not_sent(mx: Mx) -> None:
    script = Script(steps=p.NOHELO | p.NOHDRS | p.NR_CONN | p.NR_MAIL | p.NR_RCPT | p.NR_DATA | p.NR_EOH | p.NR_BODY)
    (code, _), peer = _run(mx, script)
    assert code == 250
    assert "helo" not in peer.stages() and "header" not in peer.stages()
    assert peer.stages()[-1] == "eom"


def test_reject_at_end_of_message_is_550_with_the_filters_text(mx: Mx) -> None:
    (code, text), _ = _run(mx, Script(final=replycode("554 5.7.1 Spam message rejected")))
    assert (code, text) == (554, "5.7.1 Spam message rejected")
    assert mx.queued() == [] and mx.counts.get("milter_reject") == 1


def test_plain_reject_and_tempfail(mx: Mx) -> None:
    (code, text), _ = _run(mx, Script(final=reply(b"r")))
    assert code == 550 and text.startswith("5.7.1")
    (code, text), _ = _run(mx, Script(at={"rcpt": reply(b"t")}))
    assert code == 451 and text.startswith("4.7.1")
    assert mx.queued() == []


def test_discard_answers_250_and_keeps_nothing(mx: Mx) -> None:
    (code, text), _ = _run(mx, Script(final=reply(b"d")))
    assert code == 250 and "queued as" in text
    assert mx.queued() == [] and mx.counts.get("milter_discard") == 1


def test_accept_at_connect_skips_the_rest_of_the_conversation(mx: Mx) -> None:
    (code, _), peer = _run(mx, Script(at={"connect": reply(b"a")}))
    assert code == 250 and peer.stages() == ["connect"]
    assert len(mx.queued()) == 1


def test_skip_ends_the_body_early(mx: Mx) -> None:
    big = "x" * 70 + "\r\n"
    (code, _), peer = _run(mx, Script(at={"body": reply(b"s")}), message(body=big * 2000))
    assert code == 250
    assert peer.stages().count("body") == 1 and peer.stages()[-1] == "eom"
    assert big.encode() * 2000 in mx.queued()[0].read_message()


def test_header_edits_are_applied_to_the_stored_message(mx: Mx) -> None:
    edits = [addheader("X-Spam", "Yes"), chgheader(1, "Subject", "[SPAM] Hello"), insheader(0, "X-Top", "first"),
             addheader("X-Folded", "one\n\ttwo"), reply(b"p")]
    (code, _), _ = _run(mx, Script(eom=edits, final=reply(b"a")), message(extra="X-Remove: me\r\n"))
    assert code == 250
    mx.deliver()
    (stored,) = mx.folder("bob@acme.example")
    stored = stored.replace(b"\r\n", b"\n")
    head = stored.split(b"\n\n", 1)[0]
    assert b"\nX-Spam: Yes\n" in head
    assert b"\nSubject: [SPAM] Hello\n" in head and b"Subject: Hello" not in head
    assert b"X-Folded: one\n\ttwo\n" in stored
    lines = head.split(b"\n")
    assert lines.index(b"X-Top: first") < min(i for i, line in enumerate(lines) if line.startswith(b"Received:"))


def test_change_with_empty_value_deletes_the_header(mx: Mx) -> None:
    (code, _), _ = _run(mx, Script(eom=[chgheader(1, "X-Remove", "")]), message(extra="X-Remove: me\r\n"))
    assert code == 250
    assert b"X-Remove" not in mx.queued()[0].read_message()


def test_quarantine_goes_to_the_junk_folder(mx: Mx) -> None:
    (code, _), _ = _run(mx, Script(eom=[reply(b"q", b"virus found\0")]))
    assert code == 250
    mx.deliver()
    assert mx.folder("bob@acme.example") == []
    assert len(mx.folder("bob@acme.example", "Junk")) == 1


def test_header_edit_the_filter_did_not_negotiate_counts_as_garbage(mx: Mx) -> None:
    (code, _), _ = _run(mx, Script(actions=p.ADDHDRS, eom=[chgheader(1, "Subject", "x")]))
    assert code == 451 and mx.queued() == []


@pytest.mark.parametrize("script", [
    Script(garbage="mail"),
    Script(garbage="eom"),
    Script(close_at="body"),
    Script(close_at="connect"),
    Script(stall_at="eom"),
    Script(stall_at="header"),
    Script(at={"connect": reply(b"h", b"X-Early\0v\0")}),  # a header edit before end of message
], ids=["garbage-mail", "garbage-eom", "close-mid-body", "close-at-connect", "slow-eom", "slow-header",
        "edit-too-early"])
def test_broken_filter_gets_the_default_action_tempfail(mx: Mx, script: Script) -> None:
    (code, text), _ = _run(mx, script)
    assert (code, text[:5]) == (451, "4.7.1")
    assert mx.queued() == [] and mx.counts.get("milter_error") == 1


def test_filter_that_is_down_gets_the_default_action(mx: Mx) -> None:
    spec = f"inet:127.0.0.1:{free_port()}"
    assert mx.send(message(), _filter(spec))[0] == 451
    assert mx.send(message(), _filter(spec, default="reject"))[0] == 550
    assert mx.send(message(), _filter(spec, default="accept"))[0] == 250
    assert len(mx.queued()) == 1


def test_a_hung_filter_costs_the_content_timeout_not_forever(mx: Mx) -> None:
    started = time.monotonic()
    (code, _), _ = _run(mx, Script(stall_at="eom"), timeouts=Timeouts(1, 1, 0.5))
    assert code == 451 and time.monotonic() - started < 10


def test_two_milters_in_order_and_a_unix_socket(mx: Mx, tmp_path: Path) -> None:
    async def go() -> tuple[int, str]:
        first = await MilterPeer(Script(eom=[addheader("X-First", "1")])).start()
        path = tmp_path / "m.sock"
        second = MilterPeer(Script(final=replycode("550 5.7.0 second says no")))
        second.server = await asyncio.start_unix_server(second._serve, str(path))
        try:
            return await mx.asend(message(), _filter(first.spec, f"unix:{path}"))
        finally:
            await first.stop()
            await second.stop()
    assert asyncio.run(go()) == (550, "5.7.0 second says no")
