"""SORT: base-subject extraction (RFC 5256 §2.1), every criterion, REVERSE, tie-breaks, parsing."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.imap._searchkeys_headers import base_subject, decode_words, extract_base_subject
from dovetail.imap.search import SearchError
from dovetail.imap.sort import SortCriterion, format_sort, parse_sort, sort
from tests.imap.test_search_corpus import make

UTC = dt.UTC


@pytest.mark.parametrize(("raw", "base", "reply"), [
    ("Hello", "Hello", False),
    ("Re: Hello", "Hello", True),
    ("RE: re: Fwd: FW: hello", "hello", True),
    ("Re[2]: hello", "hello", True),
    ("Re [2]: hello", "hello", True),
    ("[list] Re: hello", "hello", True),
    ("[list] [tag] hello", "hello", False),
    ("[only blob]", "[only blob]", False),
    ("Re: [only blob]", "[only blob]", True),
    ("hello (fwd)", "hello", True),
    ("hello (FWD) (fwd)  ", "hello", True),
    ("[Fwd: hello]", "hello", True),
    ("[fwd: Re: [list] hello (fwd)]", "hello", True),
    ("  lots\t of \r\n  space  ", "lots of space", False),
    ("Re:", "", True),
    ("", "", False),
    ("Real estate", "Real estate", False),
    ("Fwd hello", "Fwd hello", False),
    ("=?utf-8?q?Re=3A_caf=C3=A9?=", "café", True),
    ("=?utf-8?b?UmU6IGhpIA==?= =?utf-8?q?there?=", "hi there", True),
    ("=?x-unknown?q?abc?= x", "=?x-unknown?q?abc?= x", False),
    ("[a]b", "b", False),
    ("[a][b]", "[b]", False),
])
def test_base_subject(raw, base, reply) -> None:
    assert base_subject(raw) == (base, reply)


def test_encoded_words() -> None:
    assert decode_words("=?ISO-8859-1?Q?Andr=E9?= Pirard") == "André Pirard"
    assert decode_words("=?utf-8?q?a?=  \r\n =?utf-8?q?b?=") == "ab"  # gap between words dropped
    assert decode_words("=?utf-8?q?a?= x =?utf-8?q?b?=") == "a x b"
    assert decode_words("=?utf-8*en?b?w6k=?=") == "é"
    assert decode_words("=?utf-8?b?!!!?=") in ("", "=?utf-8?b?!!!?=")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("reRE fwdFWD[]:()x\t") + ["Re: ", "[fwd:", "(fwd)", "é"]),
                max_size=30).map("".join))
def test_base_subject_extraction_is_idempotent(text) -> None:
    base, _ = extract_base_subject(text)
    assert extract_base_subject(base)[0] == base
    assert base == base.strip()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_base_subject_never_fails(text) -> None:
    base, _ = base_subject(text)
    assert extract_base_subject(base)[0] == base


@pytest.fixture
def box():
    return [
        make(1, subject="Re: beta", from_="Zed <zed@example.org>", to="Bob <b@x.org>", cc="mm@x",
             date="Wed, 3 Jan 2024 10:00:00 +0000", internal=dt.datetime(2024, 1, 9, tzinfo=UTC), body="x" * 5000),
        make(2, subject="alpha", from_="adam@example.org", to="carl@x.org",
             date="Wed, 3 Jan 2024 09:00:00 -0200", internal=dt.datetime(2024, 1, 8, tzinfo=UTC), body="x" * 10),
        make(3, subject="[list] Beta", from_="Mia <Mia@example.org>", to="amy@x.org", cc="aa@x",
             date="bad", internal=dt.datetime(2024, 1, 1, tzinfo=UTC), body="x" * 3000),
        make(4, subject="Fwd: ALPHA", from_='"" <bob@example.org>', to="=?utf-8?q?=C3=89mile?= <e@x.org>",
             date="Tue, 2 Jan 2024 10:00:00 +0000", internal=dt.datetime(2024, 1, 8, tzinfo=UTC), body="x" * 1000),
    ]


def crit(*names: str) -> list[SortCriterion]:
    out, rev = [], False
    for n in names:
        if n == "REVERSE":
            rev = True
            continue
        out.append(SortCriterion(n, rev))
        rev = False
    return out


@pytest.mark.parametrize(("names", "expected"), [
    (("ARRIVAL",), [3, 2, 4, 1]),
    (("REVERSE", "ARRIVAL"), [1, 2, 4, 3]),  # 2 and 4 tie: sequence order even when reversed
    (("DATE",), [3, 4, 1, 2]),  # bad Date: internal date; -0200 is later in UTC
    (("SIZE",), [2, 4, 3, 1]),
    (("SIZE", "REVERSE", "DATE"), [2, 4, 3, 1]),
    (("REVERSE", "SIZE", "DATE"), [1, 3, 4, 2]),
    (("SUBJECT",), [2, 4, 1, 3]),
    (("SUBJECT", "REVERSE", "DATE"), [2, 4, 1, 3]),
    (("SUBJECT", "DATE"), [4, 2, 3, 1]),
    (("FROM",), [2, 4, 3, 1]),  # local parts: adam bob Mia zed, case-insensitive
    (("TO",), [3, 1, 2, 4]),  # amy b carl e
    (("CC",), [2, 4, 3, 1]),  # missing sorts first: "", "", aa, mm
    (("DISPLAYFROM",), [2, 4, 3, 1]),  # adam@example.org, bob@example.org, Mia, Zed
    (("DISPLAYTO",), [3, 1, 2, 4]),  # amy@x.org, Bob, carl@x.org, Émile
])
def test_sort(box, names, expected) -> None:
    assert sort(crit(*names), box) == expected


def test_sort_uids_and_response(box) -> None:
    assert sort(crit("SIZE"), box, uid=True) == [20, 40, 30, 10]
    assert format_sort([5, 3]) == "* SORT 5 3"
    assert format_sort([]) == "* SORT"
    assert format_sort([5], modseq=4) == "* SORT 5 (MODSEQ 4)"


def test_parse_sort() -> None:
    req = parse_sort([["REVERSE", "date", "SUBJECT"], "UTF-8", "UNSEEN", "FROM", b"x"])
    assert req.criteria == (SortCriterion("DATE", True), SortCriterion("SUBJECT"))
    assert req.charset == "UTF-8"


@pytest.mark.parametrize("args", [
    [], [["DATE"], "UTF-8"], ["DATE", "UTF-8", "ALL"], [[], "UTF-8", "ALL"], [["REVERSE"], "UTF-8", "ALL"],
    [["REVERSE", "REVERSE", "DATE"], "UTF-8", "ALL"], [["BOGUS"], "UTF-8", "ALL"], [[b"DATE"], "UTF-8", "ALL"],
    [["DATE"], "UTF-8", "BOGUS"], [["DATE"] * 100, "UTF-8", "ALL"],
])
def test_parse_sort_bad(args) -> None:
    with pytest.raises(SearchError) as info:
        parse_sort(args)
    assert info.value.status == "BAD"


def test_parse_sort_bad_charset() -> None:
    with pytest.raises(SearchError) as info:
        parse_sort([["DATE"], "KOI8-R", "ALL"])
    assert info.value.status == "NO" and info.value.code.startswith("BADCHARSET")


def test_address_sort_key_of_a_group_is_its_name() -> None:
    """RFC 5256: the first ENVELOPE address's mailbox; a group's first "address" is its name."""
    msgs = [make(1, cc="user2@domain2.org (foo bar)"), make(2, cc="user2: blah@domain1.org;"),
            make(3, cc="user1@domain1.org")]
    assert sort([SortCriterion("CC")], msgs) == [3, 1, 2]
    assert sort([SortCriterion("CC", reverse=True)], msgs) == [1, 2, 3]


def test_display_sort_uses_names_then_addresses_then_group_names() -> None:
    """RFC 5957 with Dovecot's handling of groups and of an address without a domain."""
    tos = ["foo bar <a@b.c>", "b@c.d", "d", "=?iso-8859-1?q?foo_aar?= <e@f.g>", "=?iso-8859-1?q?foo_car?= <f@g.h>",
           "a: xx@xx.org, yy@yy.org;", "z: aa@aa.org, bb@bb.org;", "empty:;"]
    msgs = [make(i, to=t) for i, t in enumerate(tos, 1)]
    assert sort([SortCriterion("DISPLAYTO")], msgs) == [6, 2, 3, 8, 4, 1, 5, 7]
    assert sort([SortCriterion("DISPLAYTO", reverse=True)], msgs) == [7, 5, 1, 4, 8, 3, 2, 6]
