from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.imap.fetchatt import Section, parse_fetch_atts
from dovetail.imap.limits import Limits
from dovetail.imap.parser import (
    Atom,
    BadCommand,
    Command,
    CommandParser,
    ContinuationRequest,
    Line,
    ListToken,
    String,
)
from dovetail.imap.sequence import SequenceSet, format_set


def events(data: bytes, *, authenticated: bool = True, limits: Limits | None = None, chunk: int = 0):
    p = CommandParser(limits)
    p.authenticated = authenticated
    out = []
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        p.feed(piece)
        while (ev := p.next_event()) is not None:
            out.append(ev)
    return out


SAMPLES = [
    b"a1 LOGIN user \"pa ss\\\"w\\\\d\"\r\n",
    b"a2 SELECT INBOX\r\n",
    b"a3 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM \"SUBJECT\")]<0.100>)\r\n",
    b"a4 APPEND INBOX (\\Seen) {5}\r\nhello\r\n",
    b"a5 APPEND INBOX {5+}\r\nhello {3+}\r\nabc\r\n",
    b"a6 UID STORE 1,3:5 +FLAGS.SILENT (\\Deleted)\r\n",
    b"a7 LIST \"\" \"%\" RETURN (CHILDREN SPECIAL-USE)\r\n",
    b"a8 SEARCH CHARSET UTF-8 SUBJECT \"caf\xc3\xa9\"\r\n",
    b"bad\"tag NOOP\r\n",
    b"a9 NOOP )\r\n",
    b"a10 NOOP \"unterminated\r\n",
    b"\r\n",
    b"a11 LOGIN {3}\r\nabc {3}\r\ndef\r\n",
]


def test_simple_command():
    (ev,) = events(b"a1 login user \"pa ss\\\"w\\\\d\"\r\n")
    assert ev == Command("a1", "LOGIN", (Atom("user"), String(b'pa ss"w\\d')), size=ev.size)


def test_uid_prefix_and_lists():
    (ev,) = events(b"x UID fetch 1:* (FLAGS (A B) \"q\")\n")
    assert ev.name == "FETCH" and ev.uid
    assert ev.args[0] == Atom("1:*")
    assert ev.args[1] == ListToken((Atom("FLAGS"), ListToken((Atom("A"), Atom("B"))), String(b"q")))


def test_section_kept_inside_atom():
    (ev,) = events(b"t FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> UID)\r\n")
    atts = parse_fetch_atts(ev.args[1])
    assert atts[0].name == "BODY" and atts[0].peek
    assert atts[0].section == Section((), "HEADER.FIELDS", ("FROM", "TO"))
    assert atts[0].partial == (0, 100)
    assert atts[0].response_name() == "BODY[HEADER.FIELDS (FROM TO)]<0>"
    assert atts[1].name == "UID"
    assert [a.name for a in parse_fetch_atts(Atom("ALL"))] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    (ev,) = events(b"t FETCH 1 BODY[1.2.MIME]\r\n")
    (att,) = parse_fetch_atts(ev.args[1])
    assert att.section == Section((1, 2), "MIME") and att.sets_seen


def test_sync_literal_asks_for_continuation():
    evs = events(b"a4 APPEND INBOX (\\Seen) {5}\r\nhello\r\n")
    assert isinstance(evs[0], ContinuationRequest)
    cmd = evs[1]
    assert cmd.name == "APPEND"
    assert cmd.args == (Atom("INBOX"), ListToken((Atom("\\Seen"),)), String(b"hello", literal=True))


def test_literal_plus_has_no_continuation():
    evs = events(b"a5 LOGIN {4+}\r\nuser {3+}\r\na\r\n\r\n")
    assert len(evs) == 1
    assert evs[0].args == (String(b"user", literal=True), String(b"a\r\n", literal=True))


def test_literal8():
    (cont, cmd) = events(b"a APPEND INBOX ~{3}\r\n\x00\x01\x02\r\n")
    assert cmd.args[1] == String(b"\x00\x01\x02", literal=True, binary=True)


def test_nul_in_plain_literal_rejected():
    evs = events(b"a APPEND INBOX {3+}\r\n\x00\x01\x02\r\nb NOOP\r\n")
    assert isinstance(evs[0], BadCommand) and evs[0].tag == "a"
    assert evs[1] == Command("b", "NOOP", (), size=8)


def test_byte_by_byte_equals_at_once():
    data = b"".join(SAMPLES)
    assert events(data, chunk=1) == events(data)
    assert events(data, chunk=7) == events(data)


def test_errors_are_tagged_bad_and_parser_resyncs():
    evs = events(b"a9 NOOP )\r\na10 NOOP \"unterminated\r\nz1 NOOP\r\n")
    assert [(type(e).__name__, e.tag) for e in evs] == [
        ("BadCommand", "a9"), ("BadCommand", "a10"), ("Command", "z1")]
    assert "parenthes" in evs[0].text.lower()


def test_bad_escape_and_8bit_atom():
    (ev,) = events(b"a LOGIN \"a\\b\" c\r\n")
    assert isinstance(ev, BadCommand) and "escape" in ev.text
    (ev,) = events(b"a LOGIN caf\xc3\xa9 c\r\n")
    assert isinstance(ev, BadCommand)


def test_utf8_in_quoted_string():
    (ev,) = events(b"a SEARCH SUBJECT \"caf\xc3\xa9\"\r\n")
    assert ev.args[1].text() == "café"


def test_line_too_long_then_resync():
    lim = Limits(max_line=100)
    evs = events(b"a1 NOOP " + b"x" * 500 + b"\r\nb1 NOOP\r\n", limits=lim, chunk=16)
    assert isinstance(evs[0], BadCommand) and evs[0].tag == "a1" and evs[0].code == "TOOBIG"
    assert evs[1] == Command("b1", "NOOP", (), size=9)
    assert len(evs) == 2


def test_literal_limit_before_auth():
    evs = events(b"a LOGIN {9000}\r\nb NOOP\r\n", authenticated=False)
    assert isinstance(evs[0], BadCommand) and evs[0].code == "TOOBIG"
    assert evs[1].tag == "b"
    # LITERAL+ too big: its bytes are skipped, they are not read as commands
    payload = b"c NOOP\r\n" * 2000
    evs = events(b"a LOGIN {%d+}\r\n" % len(payload) + payload + b" x\r\nd NOOP\r\n", authenticated=False)
    assert [(type(e).__name__, e.tag) for e in evs] == [("BadCommand", "a"), ("Command", "d")]


def test_append_too_big_is_no_toobig():
    lim = Limits(max_literal=100)
    (ev,) = events(b"a APPEND INBOX {101}\r\n", limits=lim)
    assert ev.status == "NO" and ev.code == "TOOBIG"


def test_total_command_size():
    lim = Limits(max_literal=100, max_command=150)
    evs = events(b"a X {80+}\r\n" + b"y" * 80 + b" {80+}\r\n" + b"z" * 80 + b"\r\nb NOOP\r\n", limits=lim)
    assert [(type(e).__name__, e.tag) for e in evs] == [("BadCommand", "a"), ("Command", "b")]


def test_expect_line():
    p = CommandParser()
    p.feed(b"a AUTHENTICATE PLAIN\r\nAGZvbwBiYXI=\r\nb NOOP\r\n")
    assert p.next_event().name == "AUTHENTICATE"
    p.expect_line()
    assert p.next_event() == Line(b"AGZvbwBiYXI=")
    assert p.next_event().tag == "b"


def test_bracket_names_are_astrings():
    from dovetail.imap.parser import astring

    (ev,) = events(b"a SELECT [Gmail]/Sent\r\n")
    assert astring(ev.args[0]) == b"[Gmail]/Sent"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="BODY.PEEK[]<>0123456789 ()HEADERFIELDSNOTMIXTBINARYSZ\"", max_size=40))
def test_fuzz_fetch_att_only_parse_errors(text):
    from dovetail.imap.fetchatt import parse_fetch_att
    from dovetail.imap.parser import ParseError

    try:
        att = parse_fetch_att(text)
    except ParseError:
        return
    assert att.response_name()


def test_sequence_sets():
    s = SequenceSet.parse("1:3,7,10:*")
    assert s.contains(2, 20) and s.contains(15, 20) and not s.contains(5, 20)
    assert s.select([1, 2, 5, 7, 11]) == [1, 2, 7, 11]
    assert SequenceSet.parse("*:4").select([1, 2, 3]) == [3]
    assert SequenceSet.parse("$").saved
    assert format_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert SequenceSet.parse("5,1:2,9,*").ranges == ((5, 5), (1, 2), (9, 9), (None, None))
    for bad in ("0", "00", "1:0", "a", "1,,2", "", "4294967296", "1:2:3", "+1", "1 "):
        try:
            SequenceSet.parse(bad)
        except Exception as exc:  # noqa: BLE001
            assert type(exc).__name__ == "ParseError"
        else:
            raise AssertionError(bad)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SAMPLES)), max_size=6), st.integers(1, 9))
def test_fuzz_never_raises(pieces, chunk):
    data = b"".join(pieces) + b"\r\nend NOOP\r\n"
    lim = Limits(max_line=200, max_literal=300, max_literal_unauth=50, max_command=400)
    evs = events(data, limits=lim, chunk=chunk)
    assert evs == events(data, limits=lim)
    for ev in evs:
        assert isinstance(ev, Command | BadCommand | ContinuationRequest)
        if isinstance(ev, BadCommand):
            assert ev.tag and ev.text
    # a NOOP after a clean line break is always seen, unless swallowed as literal payload or a long line
    assert evs


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 40)), st.one_of(st.none(), st.integers(1, 40))),
                max_size=12),
       st.integers(0, 30))
def test_sequence_numbers_resolve_as_rfc3501_reads_them(ranges, count):
    """A set of sequence numbers names the view's messages with those numbers (``*`` the last, a:b either
    way round), each once, in ascending order; a number past the last one is a BAD command, except that
    a set with ``*`` names nothing in an empty mailbox."""
    from types import SimpleNamespace

    from dovetail.imap.commands.arguments import resolve_set
    from dovetail.imap.state import CommandError

    uids = [10 * i + 3 for i in range(1, count + 1)]
    s = SimpleNamespace(selected=SimpleNamespace(mailbox=SimpleNamespace(uids=uids), saved=None))
    numbers = [n for lo, hi in ranges for n in (lo, hi) if n is not None]
    expected: list[int] | None
    if count == 0 and any(lo is None or hi is None for lo, hi in ranges):
        expected = []
    elif numbers and max(numbers) > count:
        expected = None  # BAD
    else:
        wanted: set[int] = set()
        for lo, hi in ranges:
            a, b = sorted((count if lo is None else lo, count if hi is None else hi))
            wanted.update(range(a, b + 1))
        expected = [uids[n - 1] for n in sorted(wanted)]
    try:
        got = resolve_set(s, SequenceSet(tuple(ranges)), False)
    except CommandError as exc:
        assert expected is None and exc.status == "BAD"
    else:
        assert got == expected
