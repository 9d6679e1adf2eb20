"""Every ATOM-CHAR of RFC 3501 may appear in an unquoted mailbox name, "[" included: only a closed
``[...]`` is a FETCH section, so ``SELECT a[b`` is a missing mailbox (NO), not a syntax error."""

from __future__ import annotations

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage

ATOM = b"!#$&'+,-.0123456789:;<=>?@^_`|[}"


def test_atom_chars_in_mailbox_names(make_server) -> None:
    srv = make_server()
    a = raw_login(srv)
    assert a.cmd(b"s SELECT " + ATOM)[-1].startswith(b"s NO")
    assert a.cmd(b"l LIST \"\" " + ATOM + b"%*")[-1].startswith(b"l OK")
    assert a.cmd(b"c CREATE a[b")[-1].startswith(b"c OK")
    lines = a.cmd(b"l LIST \"\" a[b")
    assert lines[-1].startswith(b"l OK") and any(b"a[b" in ln for ln in lines[:-1])
    assert a.cmd(b"e SELECT a[b")[-1].startswith(b"e OK")
    # A real section still parses, and a broken one is a clear BAD, not a disconnect.
    assert a.cmd(b"f FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM)])")[-1].startswith(b"f OK")
    assert a.cmd(b"g FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM])")[-1].startswith(b"g BAD")
    assert a.cmd(b"n NOOP")[-1].startswith(b"n OK")
    a.close()
