"""The command parser's typed objects, without a session or a socket: bytes -> CommandParser -> Command ->
:func:`dovetail.imap.typed.typed`, checked on examples and fuzzed (only ParseError may come out, and
what was written is what is read)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.imap.parser import Command, CommandParser, ParseError
from dovetail.imap.sequence import SequenceSet
from dovetail.imap.typed import PARSERS, CopyCommand, ExpungeCommand, StoreCommand, typed
from dovetail.storage.api import StoreMode


def command(line: bytes) -> Command:
    p = CommandParser()
    p.authenticated = True
    p.feed(line)
    ev = p.next_event()
    assert isinstance(ev, Command), ev
    return ev


def test_store_is_read_into_its_arguments() -> None:
    t = typed(command(b"a UID STORE 1,3:* (UNCHANGEDSINCE 12) +flags.silent (\\seen $Label)\r\n"))
    assert t == StoreCommand("a", True, SequenceSet(((1, 1), (3, None))), StoreMode.ADD, True,
                             ("\\Seen", "$Label"), 12)
    t = typed(command(b"b STORE 2 FLAGS \\Deleted\r\n"))
    assert isinstance(t, StoreCommand) and (t.mode, t.silent, t.flags, t.unchangedsince) == (
        StoreMode.REPLACE, False, ("\\Deleted",), None)


def test_copy_move_and_expunge() -> None:
    assert typed(command(b"c UID MOVE 4:5 \"Sent Items\"\r\n")) == CopyCommand(
        "c", True, True, SequenceSet(((4, 5),)), b"Sent Items")
    copy = typed(command(b"d COPY $ {5+}\r\nTrash\r\n"))
    assert isinstance(copy, CopyCommand) and copy.sequence.saved and copy.mailbox == b"Trash"
    assert copy.name == "COPY"
    assert typed(command(b"e EXPUNGE\r\n")) == ExpungeCommand("e", False)
    assert typed(command(b"f UID EXPUNGE 7\r\n")) == ExpungeCommand("f", True, SequenceSet(((7, 7),)))


def test_commands_not_typed_yet_stay_token_trees() -> None:
    cmd = command(b"g NOOP\r\n")
    assert typed(cmd) is cmd


@pytest.mark.parametrize("line", [
    b"h STORE 1 +FLAGS (\\Recent)\r\n", b"h STORE 1 FLAGZ (\\Seen)\r\n", b"h STORE 1:x FLAGS \\Seen\r\n",
    b"h STORE 1 (UNCHANGEDSINCE x) FLAGS \\Seen\r\n", b"h STORE 1 (FOO 1) FLAGS \\Seen\r\n",
    b"h STORE 1 FLAGS\r\n", b"h COPY 1\r\n", b"h COPY (1) INBOX\r\n", b"h EXPUNGE 1\r\n", b"h UID EXPUNGE\r\n",
])
def test_bad_arguments_are_parse_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        typed(command(line))


_ARG = st.one_of(
    st.sampled_from(["1", "1:*", "$", "*", "0", "4294967296", "2,4:6", "x", "\\Seen", "\\Recent", "\\Foo",
                     "FLAGS", "+FLAGS.SILENT", "-flags", "(UNCHANGEDSINCE 5)", "(UNCHANGEDSINCE)", "()",
                     "(\\Seen kw)", "\"quoted\"", "NIL", "{3+}\r\nabc", "INBOX", "(a (b))"]),
    st.text(alphabet="abc123:*,$\\()+-.\" ", min_size=1, max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["STORE", "UID STORE", "COPY", "UID COPY", "MOVE", "UID MOVE", "EXPUNGE", "UID EXPUNGE"]),
       st.lists(_ARG, max_size=5))
def test_fuzz_only_parse_errors_come_out(name: str, args: list[str]) -> None:
    p = CommandParser()
    p.authenticated = True
    p.feed(f"t {name} {' '.join(args)}\r\n".encode())
    while (ev := p.next_event()) is not None:
        if not isinstance(ev, Command):
            continue
        assert ev.name in PARSERS
        try:
            t = typed(ev)
        except ParseError:
            continue
        assert (t.tag, t.uid, t.name) == ("t", ev.uid, ev.name)


_SETS = st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)), min_size=1, max_size=4)
_FLAGS = st.lists(st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Junk", "kw1"]),
                  max_size=4, unique=True)


@settings(max_examples=100, deadline=None)
@given(_SETS, st.sampled_from(list(StoreMode)), st.booleans(), _FLAGS, st.none() | st.integers(1, 2**63 - 1),
       st.booleans())
def test_fuzz_store_reads_back_what_was_written(ranges: list[tuple[int, int]], mode: StoreMode, silent: bool,
                                                flags: list[str], since: int | None, uid: bool) -> None:
    item = {StoreMode.REPLACE: "FLAGS", StoreMode.ADD: "+FLAGS", StoreMode.REMOVE: "-FLAGS"}[mode]
    text = ",".join(f"{a}:{b}" for a, b in ranges)
    line = (f"s {'UID ' if uid else ''}STORE {text} " + (f"(UNCHANGEDSINCE {since}) " if since else "")
            + f"{item}{'.SILENT' if silent else ''} ({' '.join(flags)})\r\n")
    t = typed(command(line.encode()))
    assert isinstance(t, StoreCommand)
    assert (t.uid, t.mode, t.silent, t.flags, t.unchangedsince) == (uid, mode, silent, tuple(flags), since)
    assert t.sequence == SequenceSet.parse(text)
