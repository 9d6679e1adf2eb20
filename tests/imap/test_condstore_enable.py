"""RFC 7162 §3.1: the first CONDSTORE-enabling command in a selected mailbox (here FETCH MODSEQ)
reports the mailbox's HIGHESTMODSEQ; later ones do not repeat it."""

from __future__ import annotations

import re

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import MSG, raw_login

pytestmark = needs_storage


def test_fetch_modseq_reports_highestmodseq_once(make_server) -> None:
    srv = make_server()
    a = raw_login(srv)
    a.send(b"p APPEND INBOX {%d}\r\n" % len(MSG))
    assert a.readline().startswith(b"+")
    a.send(MSG + b"\r\n")
    assert a.read_until_tagged(b"p")[-1].startswith(b"p OK")
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    lines = a.cmd(b"f FETCH 1 MODSEQ")
    highest = [re.search(rb"HIGHESTMODSEQ (\d+)", ln) for ln in lines if ln.startswith(b"* OK [HIGHESTMODSEQ")]
    assert len(highest) == 1 and highest[0] is not None
    modseq = re.search(rb"MODSEQ \((\d+)\)", b"".join(lines))
    assert modseq is not None and int(modseq.group(1)) <= int(highest[0].group(1))
    lines = a.cmd(b"g FETCH 1 MODSEQ")
    assert not [ln for ln in lines if b"HIGHESTMODSEQ" in ln]
    a.close()
