"""Arbitrary bytes through parse, extraction and classification: an answer, never an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.replies.classify import KINDS, classify, return_date
from dovetail.replies.extract import reply_text
from dovetail.replies.parse import parse

HEADERS = st.sampled_from([
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=B\n",
    b"Content-Type: text/html; charset=utf-8\n", b"Content-Type: text/plain; charset=bogus-9\n",
    b"Auto-Submitted: auto-replied\n", b"From: MAILER-DAEMON@x\n", b"Subject: =?utf-8?B?////?=\n",
    b"Content-Transfer-Encoding: base64\n", b"References: <a@b> <<<>>> <c@d\n", b"Return-Path: <>\n",
])
PARTS = st.sampled_from([
    b"--B\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y\nAction: failed\nStatus: 5.1.1\n",
    b"--B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nOriginal-Rcpt-To: <a@b>\n",
    b"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: <q@r>\n", b"--B--\n", b"\n> quoted\n",
    b"On Mon, X <y@z> wrote:\n", b"<div class=gmail_quote><blockquote>q</blockquote></div>",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(HEADERS, max_size=5), st.lists(st.one_of(PARTS, st.binary(max_size=200)), max_size=6))
def test_pipeline_functions_never_raise(headers: list[bytes], parts: list[bytes]) -> None:
    raw = b"".join(headers) + b"\n" + b"".join(parts)
    parsed = parse(raw)
    stripped = reply_text(parsed.text, parsed.html)
    verdict = classify(parsed, stripped)
    assert verdict.kind in KINDS
    assert all("@" in a for a, _ in verdict.suppress)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_return_date_never_raises(text: str) -> None:
    return_date("I am away until " + text, None)
