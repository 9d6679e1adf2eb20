"""The SASL exchange on its own: PLAIN and LOGIN steps, initial responses, cancel, bad input, limits, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.mailauth.sasl import (
    MAX_FIELD,
    MECHANISMS,
    Challenge,
    Credentials,
    Reason,
    SaslExchange,
    SaslFailure,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_plain_with_an_initial_response() -> None:
    step = SaslExchange().start("plain", b64(b"\0alice\0wonder land"))
    assert step == Credentials("PLAIN", "alice", "wonder land", "")


def test_plain_without_an_initial_response_asks_with_an_empty_challenge() -> None:
    ex = SaslExchange()
    first = ex.start("PLAIN")
    assert first == Challenge(b"") and first.base64 == ""
    assert ex.receive(b64(b"alice\0alice\0pw").decode()) == Credentials("PLAIN", "alice", "pw", "alice")
    assert ex.done


def test_plain_authzid_of_another_user_is_refused_before_any_password() -> None:
    step = SaslExchange().start("PLAIN", b64(b"bob\0alice\0pw"))
    assert isinstance(step, SaslFailure)
    assert step.reason is Reason.AUTHZID and step.authcid == "alice"


@pytest.mark.parametrize("payload, reason", [
    (b"alice\0pw", Reason.MALFORMED),  # one NUL
    (b"\0alice\0pw\0", Reason.MALFORMED),  # three
    (b"", Reason.MALFORMED),
    (b"\0\0pw", Reason.MALFORMED),  # no authentication identity
    (b"\0al\xffice\0pw", Reason.BAD_UTF8),
    (b"\0alice\0" + b"x" * (MAX_FIELD + 1), Reason.TOO_LONG),
])  # fmt: skip
def test_plain_format_rules(payload: bytes, reason: Reason) -> None:
    step = SaslExchange().start("PLAIN", b64(payload))
    assert isinstance(step, SaslFailure) and step.reason is reason


def test_plain_allows_utf8_and_an_empty_password_for_the_password_check_to_refuse() -> None:
    step = SaslExchange().start("PLAIN", b64("\0jürgen@example.org\0".encode()))
    assert step == Credentials("PLAIN", "jürgen@example.org", "", "")


def test_equals_is_an_empty_initial_response_only() -> None:
    step = SaslExchange().start("PLAIN", "=")
    assert isinstance(step, SaslFailure) and step.reason is Reason.MALFORMED  # empty PLAIN message
    ex = SaslExchange()
    ex.start("PLAIN")
    step = ex.receive(b"=")  # in a continuation it is no base64 at all, as Dovecot reads it
    assert isinstance(step, SaslFailure) and step.reason is Reason.BAD_BASE64


def test_login_asks_for_user_then_password() -> None:
    ex = SaslExchange()
    assert ex.start("LOGIN") == Challenge(b"Username:")
    assert base64.b64decode(ex.receive(b64(b"alice")).base64) == b"Password:"
    assert ex.receive(b64(b"s3cret")) == Credentials("LOGIN", "alice", "s3cret")


def test_login_initial_response_is_the_user_name() -> None:
    ex = SaslExchange()
    assert ex.start("LOGIN", b64(b"alice")) == Challenge(b"Password:")
    assert ex.receive(b64(b"")) == Credentials("LOGIN", "alice", "")


@pytest.mark.parametrize("user, reason", [(b"", Reason.MALFORMED), (b"al\0ice", Reason.MALFORMED),
                                          (b"\xc3", Reason.BAD_UTF8)])
def test_login_user_name_rules(user: bytes, reason: Reason) -> None:
    ex = SaslExchange()
    ex.start("LOGIN")
    step = ex.receive(b64(user))
    assert isinstance(step, SaslFailure) and step.reason is reason


def test_star_cancels_at_any_challenge() -> None:
    for mech in MECHANISMS:
        ex = SaslExchange()
        ex.start(mech)
        step = ex.receive(b"*")
        assert isinstance(step, SaslFailure) and step.reason is Reason.CANCELLED and ex.done


def test_bad_base64_unknown_mechanism_and_over_long_lines() -> None:
    for bad in (b"!!!notbase64", b"YWJ", "ünïcode", b"\xff\xfe"):
        step = SaslExchange().start("PLAIN", bad)
        assert isinstance(step, SaslFailure) and step.reason is Reason.BAD_BASE64, bad
    step = SaslExchange().start("CRAM-MD5")
    assert isinstance(step, SaslFailure) and step.reason is Reason.UNSUPPORTED
    ex = SaslExchange(max_line=100)
    ex.start("PLAIN")
    step = ex.receive(b64(b"\0alice\0" + b"x" * 100))
    assert isinstance(step, SaslFailure) and step.reason is Reason.TOO_LONG


def test_an_exchange_is_used_once() -> None:
    ex = SaslExchange()
    ex.start("PLAIN", b64(b"\0a\0b"))
    with pytest.raises(RuntimeError):
        ex.receive(b64(b"\0a\0b"))
    with pytest.raises(RuntimeError):
        ex.start("PLAIN")


FUZZ = settings(max_examples=300, deadline=None)
line = st.one_of(st.binary(max_size=300), st.text(max_size=100), st.binary(max_size=200).map(base64.b64encode),
                 st.sampled_from([b"*", b"=", b"", b" ", "*"]))


@FUZZ
@given(st.sampled_from([*MECHANISMS, "XOAUTH2", "plain"]), st.one_of(st.none(), line), st.lists(line, max_size=4))
def test_arbitrary_input_gives_only_steps(mech: str, initial: bytes | str | None, lines: list[bytes | str]) -> None:
    ex = SaslExchange()
    step = ex.start(mech, initial)
    for data in lines:
        if not isinstance(step, Challenge):
            break
        step = ex.receive(data)
    assert isinstance(step, Challenge | Credentials | SaslFailure)
    assert ex.done is not isinstance(step, Challenge)
    if isinstance(step, Credentials):
        assert step.authcid and "\0" not in step.authcid + step.password
        assert step.authzid in ("", step.authcid)


@FUZZ
@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_any_plain_message_round_trips_or_is_refused(authzid: str, authcid: str, password: str) -> None:
    step = SaslExchange().start("PLAIN", b64("\0".join((authzid, authcid, password)).encode("utf-8", "surrogatepass")))
    if any("\0" in f for f in (authzid, authcid, password)) or not authcid:
        assert isinstance(step, SaslFailure)
    elif any("\ud800" <= c <= "\udfff" for c in authzid + authcid + password):
        assert isinstance(step, SaslFailure) and step.reason is Reason.BAD_UTF8
    elif authzid and authzid != authcid:
        assert isinstance(step, SaslFailure) and step.reason is Reason.AUTHZID
    else:
        assert step == Credentials("PLAIN", authcid, password, authzid)
