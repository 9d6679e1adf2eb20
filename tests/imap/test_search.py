"""SEARCH: parsing every key, matching rules, errors, ESEARCH/SEARCHRES/CONDSTORE responses, fuzzing."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.imap.parser import Atom, Command, CommandParser, ListToken, String
from dovetail.imap.search import (
    And,
    Header,
    Not,
    Or,
    SearchContext,
    SearchError,
    compile_facts,
    evaluate,
    evaluate_messages,
    format_esearch,
    format_search,
    parse_search,
    saved_result,
)
from tests.imap.test_search_corpus import make

UTC = dt.UTC


@pytest.fixture
def box():
    return [
        make(1, subject="Hello world", from_='"Alice Example" <alice@example.org>', to="bob@example.net",
             cc="carol@example.com", date="Mon, 1 Jan 2024 23:30:00 -0500", flags={"\\Seen", "$Work"},
             body="The quick brown fox\r\n", internal=dt.datetime(2024, 1, 2, 4, 30, tzinfo=UTC), modseq=5),
        make(2, subject="=?utf-8?q?Caf=C3=A9_cr=C3=A8me?=", from_="=?iso-8859-1?q?J=F6rg?= <jorg@example.de>",
             to="alice@example.org", date="Tue, 2 Jan 2024 10:00:00 +0000", flags={"\\Flagged", "\\Recent"},
             body="jumps over the lazy dog\r\n", internal=dt.datetime(2024, 1, 2, 10, tzinfo=UTC), modseq=9),
        make(3, subject="Re: Hello world", from_="bob@example.net", date="garbage date",
             flags={"\\Answered", "\\Deleted", "\\Draft", "\\Recent", "\\Seen"},
             x_mailer="Mutt", body="Reply text\r\n" + "x" * 500,
             internal=dt.datetime(2024, 1, 5, tzinfo=UTC), modseq=2),
        make(4, subject="Status [fwd: report]", from_="dave@example.org", bcc="secret@example.org",
             body="=?utf-8?q?not-decoded-in-body?=\r\n", internal=dt.datetime(2023, 12, 31, tzinfo=UTC)),
    ]


def search(box, *args, **ctx):
    charset, key = parse_search(list(args))
    return evaluate(key, box, SearchContext(**ctx))


# -- every RFC 3501 key ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["ALL"], [1, 2, 3, 4]),
    (["ANSWERED"], [3]), (["UNANSWERED"], [1, 2, 4]),
    (["DELETED"], [3]), (["UNDELETED"], [1, 2, 4]),
    (["DRAFT"], [3]), (["UNDRAFT"], [1, 2, 4]),
    (["FLAGGED"], [2]), (["UNFLAGGED"], [1, 3, 4]),
    (["SEEN"], [1, 3]), (["UNSEEN"], [2, 4]),
    (["RECENT"], [2, 3]), (["OLD"], [1, 4]), (["NEW"], [2]),
    (["KEYWORD", "$Work"], [1]), (["KEYWORD", "$work"], [1]), (["UNKEYWORD", "$Work"], [2, 3, 4]),
    (["FROM", b"alice"], [1]), (["FROM", b"ALICE EXAMPLE"], [1]), (["FROM", b"j\xc3\xb6rg"], [2]),
    (["TO", "alice"], [2]), (["CC", b"carol"], [1]), (["BCC", b"secret"], [4]),
    (["SUBJECT", b"hello"], [1, 3]), (["SUBJECT", b"CAF\xc3\x89 CR"], [2]), (["SUBJECT", b""], [1, 2, 3, 4]),
    (["HEADER", b"X-Mailer", b"mutt"], [3]), (["HEADER", "x-mailer", b""], [3]),
    (["HEADER", b"Cc", b""], [1]),
    (["BODY", b"LAZY dog"], [2]), (["BODY", b"hello world"], []),
    (["TEXT", b"hello world"], [1, 3]), (["TEXT", b"quick"], [1]), (["TEXT", b"x-mailer: mutt"], [3]),
    (["TEXT", b"caf\xc3\xa9"], [2]),
    (["LARGER", "400"], [3]), (["SMALLER", "400"], [1, 2, 4]),
    (["BEFORE", "2-Jan-2024"], [4]), (["ON", "2-Jan-2024"], [1, 2]), (["SINCE", "3-jan-2024"], [3]),
    (["ON", b"02-Jan-2024"], [1, 2]),
    (["SENTON", "1-Jan-2024"], [1]), (["SENTBEFORE", "2-Jan-2024"], [1, 3, 4]),
    (["SENTSINCE", "2-Jan-2024"], [2]),
    (["UID", "20:30"], [2, 3]), (["UID", "35:*"], [4]), (["UID", "1000:*"], [4]),
    (["2,4"], [2, 4]), (["3:*"], [3, 4]), (["*"], [4]), (["*:3"], [3, 4]), (["5:9"], []),
    (["NOT", "SEEN"], [2, 4]), (["OR", "SEEN", "FLAGGED"], [1, 2, 3]),
    (["OR", "OR", "ANSWERED", "FLAGGED", "KEYWORD", "$Work"], [1, 2, 3]),
    ([["SEEN", "UNDELETED"]], [1]), (["NOT", ["SEEN", "UNDELETED"]], [2, 3, 4]),
    (["SEEN", "UNDELETED", "1:*"], [1]), ([[["ALL"]]], [1, 2, 3, 4]),
    (["MODSEQ", "5"], [1, 2]), (["MODSEQ", b"/flags/\\Seen", "all", "9"], [2]),
])
def test_keys(box, args, expected) -> None:
    assert search(box, *args) == expected
    fast = search_facts(box, *args)
    assert fast is None or fast == expected


def search_facts(box, *args, **ctx):
    """The fast path (index facts and header fields, no message objects), or None where it declines."""
    _charset, key = parse_search(list(args))
    by_uid = {m.uid: m for m in box}
    context = SearchContext(max_seq=len(box), max_uid=max(m.uid for m in box), **ctx)
    pred = compile_facts(key, context, lambda name, uid: by_uid[uid].header(name))
    if pred is None:
        return None
    facts = [(m.uid, m.flags - {"\\Recent"}, m.internal_date.timestamp(), m.size, m.modseq, "\\Recent" in m.flags)
             for m in box]
    return [seq for seq, f in enumerate(facts, 1) if pred(seq, f)]


def test_fast_path_takes_the_common_keys(box) -> None:
    for args in (["UNSEEN"], ["FROM", "alice"], ["SINCE", "3-Jan-2024"], ["UID", "20:*"], ["NOT", "RECENT"],
                 ["OR", "SEEN", ["LARGER", "400", "SUBJECT", "hello"]]):
        assert search_facts(box, *args) is not None, args
    for args in (["SENTON", "1-Jan-2024"], ["BODY", "dog"], ["OR", "SEEN", "TEXT", "x"]):
        assert search_facts(box, *args) is None, args


_FAST_KEYS = [["SEEN"], ["UNSEEN"], ["RECENT"], ["NEW"], ["KEYWORD", "$work"], ["FROM", "alice"], ["SUBJECT", "hello"],
              ["SUBJECT", ""], ["HEADER", "X-Mailer", "mutt"], ["LARGER", "400"], ["BEFORE", "2-Jan-2024"],
              ["ON", "2-Jan-2024"], ["SINCE", "3-jan-2024"], ["UID", "20:30"], ["3:*"], ["MODSEQ", "5"],
              ["OLDER", "3600"], ["YOUNGER", "100000000"], ["SENTON", "1-Jan-2024"], ["BODY", "dog"]]
_key_args = st.recursive(
    st.sampled_from(_FAST_KEYS),
    lambda inner: st.one_of(st.builds(lambda a: ["NOT", *a], inner),
                            st.builds(lambda a, b: ["OR", *a, *b], inner, inner),
                            st.builds(lambda a, b: [[*a, *b]], inner, inner)),
    max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_key_args)
def test_fast_path_agrees_with_the_message_path(box, args) -> None:
    now = dt.datetime(2024, 1, 5, 12, tzinfo=UTC)
    fast = search_facts(box, *args, now=now)
    if fast is not None:
        assert fast == search(box, *args, now=now)


def test_uid_results_and_star_of_the_view(box) -> None:
    assert search(box, "SEEN", uid=True) == [10, 30]
    # "*" is the last message of the whole mailbox, not of the messages handed in
    assert search(box[:2], "UID", "35:*", max_uid=40) == []
    assert search(box[:2], "*", max_seq=4) == []
    assert search([], "1:*") == []


def test_saved_result_dollar(box) -> None:
    assert search(box, "$", saved=frozenset({20, 40})) == [2, 4]
    assert search(box, "UID", "$", saved=frozenset({30})) == [3]
    assert search(box, "NOT", "$") == [1, 2, 3, 4]  # nothing saved: $ is empty


def test_within_older_younger(box) -> None:
    now = dt.datetime(2024, 1, 5, 12, tzinfo=UTC)
    assert search(box, "YOUNGER", "86400", now=now) == [3]
    assert search(box, "OLDER", "86400", now=now) == [1, 2, 4]


def test_date_comparisons_ignore_time_and_zone(box) -> None:
    # message 1: sent 1 Jan 23:30 -0500 (2 Jan in UTC): SENTON uses the date as written
    assert search(box, "SENTON", "2-Jan-2024") == [2]
    # missing or unparseable Date: 1 Jan 1970, as Dovecot does
    assert search(box, "SENTBEFORE", "1-Jan-2000") == [3, 4]
    assert search(box, "SENTON", "1-Jan-1970") == [3, 4]
    assert 3 not in search(box, "SENTSINCE", "2-Jan-1970")


def test_body_is_read_lazily(box) -> None:
    for m in box:
        m.text_calls = 0
    assert search(box, "BODY", b"dog", "SEEN") == []
    assert [m.text_calls for m in box] == [1, 0, 1, 0]  # flags ruled out 2 and 4 first
    assert search(box, "OR", "SEEN", "BODY", b"dog") == [1, 2, 3]
    assert [m.text_calls for m in box] == [1, 1, 1, 1]  # seen messages did not need it


def test_parser_tokens_from_the_imap_parser(box) -> None:
    parser = CommandParser()
    parser.authenticated = True
    parser.feed(b'a1 UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM "alice" SEEN) '
                b'SUBJECT {5+}\r\ncaf\xc3\xa9 NOT 3\r\n')
    cmd = parser.next_event()
    assert isinstance(cmd, Command) and cmd.uid
    request = parse_search(cmd.args)
    assert request.charset == "UTF-8"
    assert request.returns == frozenset({"MIN", "COUNT"})
    assert evaluate(request.key, box) == [1, 2]
    assert parse_search([Atom("SUBJECT"), String(b"x")]).key == Header("subject", "x")
    assert parse_search([ListToken((Atom("NOT"), Atom("SEEN")))]).key == Not(parse_search(["SEEN"]).key)


def test_tree_shapes() -> None:
    charset, key = parse_search(["CHARSET", "us-ascii", "OR", "SEEN", "FROM", "x", "TO", b"y"])
    assert charset == "US-ASCII"
    assert isinstance(key, And) and isinstance(key.keys[0], Or)
    request = parse_search(["RETURN", [], "MODSEQ", "1", "$"])
    assert request.returns == frozenset({"ALL"}) and request.uses_modseq and request.uses_saved
    assert parse_search(["ALL"]).returns is None and not parse_search(["ALL"]).uses_modseq


@pytest.mark.parametrize("args", [
    [], ["BOGUS"], ["FROM"], ["OR", "SEEN"], ["NOT"], [b"ALL"], ["LARGER", "x"], ["LARGER", "99999999999"],
    ["ON", "32-Jan-2024"], ["ON", "1-Foo-2024"], ["ON", "1-Jan-24"], ["UID", "0"], ["UID", "1:x"], ["0"],
    ["1,,2"], ["HEADER", b"Bad:Name", b"x"], ["HEADER", b"", b"x"], ["KEYWORD", b"quoted"], ["MODSEQ", "-1"],
    ["MODSEQ", b"/flags/x", "bogus", "1"], ["MODSEQ", "9223372036854775808"], ["RETURN", ["FOO"], "ALL"],
    ["RETURN", "MIN", "ALL"], ["CHARSET"], ["CHARSET", "UTF-8"], ["SUBJECT", ["x"]], ["YOUNGER", "0"],
    ["CHARSET", "US-ASCII", "SUBJECT", b"caf\xc3\xa9"], ["SUBJECT", b"\xff\xfe"], [[]], ["NOT"] * 200 + ["ALL"],
    ["OR"] * 60 + ["ALL"] * 61, [object()],
])
def test_bad(args) -> None:
    with pytest.raises(SearchError) as info:
        parse_search(args)
    assert info.value.status == "BAD"
    assert info.value.response("t1").startswith("t1 BAD ")


def test_bad_charset_is_no_with_code() -> None:
    with pytest.raises(SearchError) as info:
        parse_search(["CHARSET", b"ISO-2022-JP", "ALL"])
    assert info.value.status == "NO"
    assert info.value.response("a") == "a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset ISO-2022-JP"


def test_deep_list_nesting_is_refused() -> None:
    deep: list = ["ALL"]
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(SearchError):
        parse_search([deep])


# -- responses ------------------------------------------------------------------------------------------

def test_format_search() -> None:
    assert format_search([]) == "* SEARCH"
    assert format_search([2, 3, 5]) == "* SEARCH 2 3 5"
    assert format_search([2, 5], modseq=917162500) == "* SEARCH 2 5 (MODSEQ 917162500)"
    assert format_search([], modseq=7) == "* SEARCH"


def test_format_esearch() -> None:
    nums = [2, 10, 11, 12, 15]
    assert (format_esearch("A282", True, nums, {"MIN", "MAX", "COUNT", "ALL"})
            == '* ESEARCH (TAG "A282") UID MIN 2 MAX 15 COUNT 5 ALL 2,10:12,15')
    assert format_esearch("A1", False, [], {"MIN", "COUNT", "ALL"}) == '* ESEARCH (TAG "A1") COUNT 0'
    assert format_esearch("A1", False, [], {"ALL"}) == '* ESEARCH (TAG "A1")'
    assert format_esearch('x"\\', False, [1], ()) == '* ESEARCH (TAG "x\\"\\\\") ALL 1'
    assert format_esearch("a", False, [3], {"ALL"}, modseq=12) == '* ESEARCH (TAG "a") ALL 3 MODSEQ 12'
    assert format_esearch("a", False, [3], {"SAVE"}) is None
    assert format_esearch("a", False, [3], {"SAVE", "COUNT"}) == '* ESEARCH (TAG "a") COUNT 1'
    assert format_esearch(None, False, [4, 5], {"ALL"}) == "* ESEARCH ALL 4:5"


def test_saved_result_follows_min_max(box) -> None:
    found = evaluate_messages(parse_search(["UNDELETED"]).key, box)
    assert saved_result(found, {"SAVE"}) == {10, 20, 40}
    assert saved_result(found, {"SAVE", "MIN"}) == {10}
    assert saved_result(found, {"SAVE", "MIN", "MAX"}) == {10, 40}
    assert saved_result(found, {"SAVE", "MAX", "COUNT"}) == {10, 20, 40}
    assert saved_result([], {"SAVE", "MIN"}) == frozenset()


# -- fuzzing --------------------------------------------------------------------------------------------

_WORDS = ["ALL", "OR", "NOT", "UID", "FROM", "HEADER", "BEFORE", "1-Jan-2024", "1:*", "$", "*", "5", "0",
          "MODSEQ", "RETURN", "CHARSET", "UTF-8", "KEYWORD", "LARGER", "SEEN", "NEW", "OLDER", "x", "1,2:3"]
_tokens = st.recursive(
    st.one_of(st.sampled_from(_WORDS), st.text(max_size=8), st.binary(max_size=8),
              st.builds(Atom, st.sampled_from(_WORDS)), st.builds(String, st.binary(max_size=6))),
    lambda inner: st.lists(inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tokens, max_size=8))
def test_parse_search_raises_only_search_error(args) -> None:
    try:
        request = parse_search(args)
    except SearchError as exc:
        assert exc.status in ("BAD", "NO")
        return
    evaluate(request.key, [make(1, subject="x"), make(2)], SearchContext(now=dt.datetime.now(UTC)))


def test_address_keys_match_the_address_not_its_spelling() -> None:
    """FROM/TO/CC/BCC match each address written anew (Dovecot's way): comments and quoting inside an
    address do not hide it, a display name is found, and a longer local part is not a match."""
    msgs = [make(1, from_="user@domain.org"), make(2, from_="Real <user@domain.org>"),
            make(3, from_="<user (comment)@ (comment) domain.org>"), make(4, from_="user@domain.org (Real)"),
            make(5, from_="user1@domain.org, user2@domain.org"),
            make(6, from_="=?utf-8?q?J=C3=B6rg?= <jorg@example.de>"), make(7, cc="team: a@x.org, b@y.org;")]
    assert search(msgs, "FROM", "user@domain.org") == [1, 2, 3, 4]
    assert search(msgs, "FROM", "real") == [2, 4]
    assert search(msgs, "FROM", "jörg <jorg@") == [6]
    assert search(msgs, "CC", "b@y.org") == [7]
    facts = search_facts(msgs, "FROM", "user@domain.org")
    assert facts == [1, 2, 3, 4]


def test_search_string_cut_mid_character_is_searched_not_refused() -> None:
    """imaptest cuts words out of messages at byte offsets: a literal starting or ending inside a UTF-8
    character is searched (its cut bytes kept as they came), not answered BAD."""
    from dovetail.imap.search.keys import Body
    from dovetail.imap.search.parse import parse_keys

    assert parse_keys(["BODY", "caf\u00e9".encode()[:4]], "UTF-8") == Body("caf\udcc3")
    assert parse_keys(["BODY", "\u00e9t\u00e9".encode()[1:]], "UTF-8") == Body("\udca9t\u00e9")


@pytest.mark.parametrize(("args", "expected"), [
    # "Café crème" folds to decomposed letters: "e" + U+0301 (CC 81), "e" + U+0300 (CC 80).
    (["SUBJECT", b"\x81 cr"], [2]), (["SUBJECT", b"CAFE\xcc"], [2]), (["SUBJECT", b"\x82 cr"], []),
    (["TEXT", b"\x81 CR"], [2]), (["TEXT", b"\x80me"], [2]), (["BODY", b"\x81 cr"], []),
    (["OR", "SUBJECT", b"\x80me", "FROM", b"\xb6rg"], [2]),
])
def test_search_string_cut_mid_character_finds_the_bytes_it_holds(box, args, expected) -> None:
    """A word cut out of a message mid-character finds that message, as Dovecot's byte comparison of
    folded strings does (imaptest reported each message such a SEARCH left out)."""
    assert search(box, *args) == expected
    assert search_facts(box, *args) in (None, expected)
