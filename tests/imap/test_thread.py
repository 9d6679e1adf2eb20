"""THREAD: ORDEREDSUBJECT, REFERENCES (links, dummies, subject merging, loops), response format."""

from __future__ import annotations

import datetime as dt

import pytest

from dovetail.imap.search import SearchError
from dovetail.imap.thread import ThreadNode, format_thread, format_thread_list, parse_thread, thread
from tests.imap.test_search_corpus import make

N = ThreadNode


def day(n: int) -> str:
    return (dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n)).strftime("%a, %d %b %Y %H:%M:%S +0000")


def msg(seq: int, subject: str, mid: str | None = None, refs: str | None = None, irt: str | None = None,
        hour: int | None = None):
    headers = {"subject": subject, "date": day(seq if hour is None else hour)}
    if mid:
        headers["message_id"] = f"<{mid}@x>"
    if refs:
        headers["references"] = " ".join(f"<{r}@x>" for r in refs.split())
    if irt:
        headers["in_reply_to"] = irt
    return make(seq, **headers)


def refs(*msgs) -> str:
    return format_thread_list(thread("REFERENCES", list(msgs)))


def test_format() -> None:
    tree = [N(2), N(3, [N(6, [N(4, [N(23)]), N(44, [N(7, [N(96)])])])])]
    assert format_thread_list(tree) == "(2)(3 6 (4 23)(44 7 96))"
    assert format_thread([N(None, [N(3), N(5)])]) == "* THREAD ((3)(5))"
    assert format_thread([]) == "* THREAD"
    chain = N(1)
    node = chain
    for i in range(2, 20001):
        node.children.append(N(i))
        node = node.children[0]
    text = format_thread_list([chain])
    assert text.startswith("(1 2 3 ") and text.endswith(" 20000)")


def test_chain_and_siblings() -> None:
    a, b, c = msg(1, "a", "a"), msg(2, "b", "b", "a"), msg(3, "c", "c", "a b")
    assert refs(a, b, c) == "(1 2 3)"
    c2 = msg(3, "c", "c", "a")
    assert refs(a, b, c2) == "(1 (2)(3))"


def test_missing_parent_becomes_dummy_or_is_promoted() -> None:
    b, c = msg(1, "b", "b", "x"), msg(2, "c", "c", "x")
    assert refs(b, c) == "((1)(2))"
    assert refs(b) == "(1)"
    # a dummy in the middle of a chain collapses into the nearest real ancestor
    a, d = msg(1, "a", "a"), msg(2, "d", "d", "a gone")
    assert refs(a, d) == "(1 2)"


def test_in_reply_to_when_no_references() -> None:
    a = msg(1, "a", "a")
    b = msg(2, "b", "b", irt="<junk> <a@x> <other@x>")
    assert refs(a, b) == "(1 2)"
    c = msg(3, "c", "c", refs="a", irt="<b@x>")  # References wins
    assert refs(a, b, c) == "(1 (2)(3))"


def test_duplicate_message_ids_and_no_ids() -> None:
    a1, a2 = msg(1, "x1", "a"), msg(2, "x2", "a")
    child = msg(3, "x3", "c", "a")
    assert refs(a1, a2, child) == "(1 3)(2)"
    assert refs(msg(1, "p"), msg(2, "q")) == "(1)(2)"


def test_loops_are_not_followed() -> None:
    a = msg(1, "a", "a", "b")
    b = msg(2, "b", "b", "a")
    out = refs(a, b)
    assert sorted(int(x) for x in out.replace("(", " ").replace(")", " ").split()) == [1, 2]
    assert refs(msg(1, "s", "s", "s")) == "(1)"  # references itself


def test_message_own_references_replace_implied_parent() -> None:
    # d implies c's parent is b, but c itself references only a: c's own header wins
    a, b = msg(1, "a", "a"), msg(2, "b", "b")
    c = msg(4, "c", "c", "a")
    d = msg(3, "d", "d", "b c")
    assert refs(a, b, d, c) == "(1 4 3)(2)"


def test_subject_merging() -> None:
    # a reply without references joins the original's thread
    assert refs(msg(1, "hello", "a"), msg(2, "Re: hello", "b")) == "(1 2)"
    # two originals with one subject get a dummy parent
    assert refs(msg(1, "hello", "a"), msg(2, "hello", "b")) == "((1)(2))"
    # the original is younger than the reply: the reply still hangs under it
    assert refs(msg(1, "Re: hi", "a", hour=1), msg(2, "hi", "b", hour=0)) == "(2 1)"
    # empty subjects and missing subjects never merge
    assert refs(msg(1, "Re:", "a"), msg(2, "", "b")) == "(1)(2)"
    # two dummies with the same subject pool their children
    out = refs(msg(1, "t", "m1", "x"), msg(2, "t", "m2", "x"), msg(3, "t", "m3", "y"), msg(4, "t", "m4", "y"))
    assert out == "((1)(2)(3)(4))"


def test_roots_and_siblings_sorted_by_sent_date() -> None:
    a = msg(1, "a", "a", hour=10)
    b = msg(2, "b", "b", "a", hour=30)
    c = msg(3, "c", "c", "a", hour=20)
    d = msg(4, "d", "d", hour=5)
    assert refs(a, b, c, d) == "(4)(1 (3)(2))"
    uids = format_thread_list(thread("references", [a, b, c, d], uid=True))
    assert uids == "(40)(10 (30)(20))"


def test_ordered_subject() -> None:
    ms = [msg(1, "b", hour=3), msg(2, "Re: a", hour=2), msg(3, "a", hour=4), msg(4, "B", hour=1),
          msg(5, "c", hour=0), msg(6, "Fwd: a", hour=5)]
    assert format_thread_list(thread("ORDEREDSUBJECT", ms)) == "(5)(4 1)(2 (3)(6))"


def test_ten_thousand_message_chain() -> None:
    ms = [msg(1, "s", "m1")]
    for i in range(2, 3001):
        ms.append(msg(i, "Re: s", f"m{i}", " ".join(f"m{j}" for j in range(max(1, i - 20), i))))
    out = refs(*ms)
    assert out.startswith("(1 2 3 ") and out.endswith(" 3000)")


def test_parse_thread() -> None:
    req = parse_thread(["references", "UTF-8", "SINCE", "1-Jan-2024"])
    assert req.algorithm == "REFERENCES" and req.charset == "UTF-8"
    for bad in ([], ["REFS", "UTF-8", "ALL"], [b"REFERENCES", "UTF-8", "ALL"], ["REFERENCES", "UTF-8"]):
        with pytest.raises(SearchError):
            parse_thread(bad)
    with pytest.raises(SearchError) as info:
        parse_thread(["ORDEREDSUBJECT", "BIG5", "ALL"])
    assert info.value.status == "NO"
