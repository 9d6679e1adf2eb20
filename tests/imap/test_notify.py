"""NOTIFY (RFC 5465): STATUS at SET, STATUS when another session changes a watched mailbox (after a
command and during IDLE), LIST for created mailboxes, FETCH items for new mail in the selected one,
FlagChange off, NONE, and refused events."""

from __future__ import annotations

import re

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import MSG, raw_login

pytestmark = needs_storage


def _append(c, box: bytes) -> None:
    c.send(b"p APPEND " + box + b" {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
    assert c.read_until_tagged(b"p")[-1].startswith(b"p OK")


def test_notify_other_mailboxes(make_server) -> None:
    srv = make_server()
    c = raw_login(srv)
    other = raw_login(srv)
    assert c.cmd(b"c CREATE Lists")[-1].startswith(b"c OK")
    _append(other, b"Lists")
    lines = c.cmd(b"n NOTIFY SET STATUS (MAILBOXES Lists (MessageNew MessageExpunge)) (PERSONAL (MailboxName))")
    assert lines[-1].startswith(b"n OK")
    status = [ln for ln in lines if ln.startswith(b"* STATUS")]
    assert len(status) == 1 and re.match(rb"\* STATUS Lists \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+\)", status[0])

    _append(other, b"Lists")
    lines = c.cmd(b"a NOOP")
    assert any(re.match(rb"\* STATUS Lists \(MESSAGES 2 UIDNEXT 3 ", ln) for ln in lines), lines
    assert not [ln for ln in c.cmd(b"b NOOP") if ln.startswith(b"* STATUS")]  # nothing new: nothing said

    # During IDLE, without any command.
    c.send(b"i IDLE\r\n")
    assert c.readline().startswith(b"+")
    assert other.cmd(b"c CREATE Fresh")[-1].startswith(b"c OK")
    assert c.readline(timeout=15) == b'* LIST () "/" Fresh'
    c.send(b"DONE\r\n")
    assert c.read_until_tagged(b"i")[-1].startswith(b"i OK")

    assert c.cmd(b"x NOTIFY NONE")[-1].startswith(b"x OK")
    _append(other, b"Lists")
    assert not [ln for ln in c.cmd(b"y NOOP") if ln.startswith(b"* STATUS")]
    lines = c.cmd(b"z NOTIFY SET (PERSONAL (MessageNew AnnotationChange))")
    assert lines[-1].startswith(b"z NO [BADEVENT (")
    assert c.cmd(b"w NOTIFY SET (PERSONAL (MessageNew (FLAGS)))")[-1].startswith(b"w BAD")
    c.close()
    other.close()


def test_notify_selected_fetch_items_and_no_flag_changes(make_server) -> None:
    srv = make_server()
    c = raw_login(srv)
    other = raw_login(srv)
    _append(other, b"INBOX")
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert c.cmd(b"n NOTIFY SET (SELECTED (MessageNew (UID ENVELOPE) MessageExpunge))")[-1].startswith(b"n OK")
    _append(other, b"INBOX")
    lines = c.cmd(b"a NOOP")
    assert b"* 2 EXISTS" in lines
    assert any(ln.startswith(b"* 2 FETCH (UID 2 ENVELOPE (") for ln in lines), lines
    assert other.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert other.cmd(b"f STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"f OK")
    assert not [ln for ln in c.cmd(b"b NOOP") if b"FETCH" in ln]  # FlagChange was not asked for
    c.close()
    other.close()
