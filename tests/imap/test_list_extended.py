"""LIST-EXTENDED (RFC 5258) and LSUB details that imaptest's listext/subscribe scripts check:
subscriptions to deleted mailboxes (\\NonExistent), RECURSIVEMATCH's CHILDINFO, children attributes
only when RETURN (CHILDREN) asks, and LSUB's \\Noselect parents for "%"."""

from __future__ import annotations

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage


def _listed(lines: list[bytes]) -> dict[bytes, bytes]:
    """name -> the rest of each untagged LIST/LSUB line (attributes and extended data)."""
    out = {}
    for ln in lines[:-1]:
        if ln.startswith((b"* LIST", b"* LSUB")):
            attrs, _, rest = ln.partition(b') "/" ')
            name, _, ext = rest.partition(b" ")
            out[name] = attrs.split(b"(", 1)[1] + (b" | " + ext if ext else b"")
    return out


def test_list_extended_and_lsub(make_server) -> None:
    srv = make_server()
    c = raw_login(srv)
    for name in (b"t", b"t/a", b"t/a/deep", b"t/b", b"gone"):
        assert c.cmd(b"c CREATE " + name)[-1].startswith(b"c OK")
    for name in (b"t/a/deep", b"t/b", b"gone"):
        assert c.cmd(b"s SUBSCRIBE " + name)[-1].startswith(b"s OK")
    assert c.cmd(b"d DELETE gone")[-1].startswith(b"d OK")

    got = _listed(c.cmd(b'l LIST (SUBSCRIBED) "" "*"'))
    assert set(got[b"gone"].split()) == {b"\\Subscribed", b"\\NonExistent"}
    assert got[b"t/b"] == b"\\Subscribed"  # no children attributes unless RETURN (CHILDREN)
    assert b"t" not in got

    got = _listed(c.cmd(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" "t/%"'))
    assert got[b"t/a"] == b' | ("CHILDINFO" ("SUBSCRIBED"))' and got[b"t/b"] == b"\\Subscribed"
    got = _listed(c.cmd(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" ("t/a" "t/a/deep")'))
    assert b"t/a" not in got  # its subscribed child is listed itself: no CHILDINFO
    got = _listed(c.cmd(b'l LIST "" "t/%" RETURN (CHILDREN)'))
    assert b"\\HasChildren" in got[b"t/a"] and b"\\HasNoChildren" in got[b"t/b"]
    assert c.cmd(b'b LIST (RECURSIVEMATCH REMOTE) "" "*"')[-1].startswith(b"b BAD")

    got = _listed(c.cmd(b'm LSUB "" "t/%"'))
    assert got == {b"t/a": b"\\Noselect", b"t/b": b""}
    got = _listed(c.cmd(b'm LSUB "" "*"'))
    assert set(got) == {b"t/a/deep", b"t/b", b"gone"} and not any(got.values())
    c.close()
