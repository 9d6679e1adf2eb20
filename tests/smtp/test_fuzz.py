"""Hypothesis fuzzing of the core and the envelope parser: never raise, always a well-formed reply."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.smtp import events as ev
from dovetail.smtp.address import parse_params, parse_path
from dovetail.smtp.limits import Limits
from dovetail.smtp.protocol import SmtpConnection

from .sansio import Driver, merged

REPLY_LINE = re.compile(r"\A[2-5]\d\d[ -][^\r\n]*\Z")
VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "HELP",
         "STARTTLS", "AUTH", "QUIT", "mail from:", "EXPN", ""]  # fmt: skip
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_output(d: Driver) -> None:
    text = d.output.decode("utf-8")
    assert text == "" or text.endswith("\r\n")
    for line in d.replies():
        assert REPLY_LINE.match(line), line


def _conn() -> SmtpConnection:
    return SmtpConnection(
        Limits(max_message_size=4096, max_command_line=128, max_line_length=200, chunk_size=512, max_errors=50),
        tls_available=True,
        auth_available=True,
        auth_plaintext=True,
    )


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(1, 64), max_size=30))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    d = Driver(_conn())
    pos = 0
    for n in cuts:
        d.feed(data[pos : pos + n])
        pos += n
    d.feed(data[pos:])
    _check_output(d)


command_lines = st.lists(
    st.tuples(st.sampled_from(VERBS), st.text(max_size=60)).map(
        lambda t: (t[0] + (" " if t[0] and not t[0].endswith(":") else "") + t[1]).encode("utf-8", "replace")
    ),
    max_size=25,
)


@FUZZ
@given(command_lines, st.sampled_from([b"\r\n", b"\n"]))
def test_random_command_lines_get_one_reply_each(lines: list[bytes], eol: bytes) -> None:
    lines = [ln.replace(b"\r", b"").replace(b"\n", b"") for ln in lines]
    d = Driver(_conn())
    d.feed(b"EHLO fuzz.test\r\n" + b"".join(ln + eol for ln in lines))
    _check_output(d)
    for event in d.events:
        assert isinstance(event, ev.Event)
    modal = (ev.DataStart, ev.BdatStart, ev.AuthChallenge, ev.StartTls)  # these change how later lines are read
    # a BDAT refused for want of MAIL/RCPT still reads its chunk (RFC 3030) before its reply: the lines
    # after it are chunk data
    chunked = any(ln[:5].upper() == b"BDAT " for ln in lines)
    if not d.conn.closing and not chunked and not any(isinstance(e, modal) for e in d.events):
        assert len(d.codes()) == len(lines) + 1


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 40), max_size=20))
def test_data_phase_split_invariance(body: bytes, cuts: list[int]) -> None:
    prologue = b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n"
    stream = prologue + body + b"\r\n.\r\nQUIT\r\n"
    whole = Driver(_conn())
    whole.feed(stream)
    split = Driver(_conn())
    pos = 0
    for n in cuts:
        split.feed(stream[pos : pos + n])
        pos += n
    split.feed(stream[pos:])
    assert merged(whole.events) == merged(split.events)
    assert whole.output == split.output
    _check_output(whole)


@FUZZ
@given(st.text(max_size=300))
def test_path_parser_only_raises_value_error(text: str) -> None:
    for utf8 in (False, True):
        try:
            address, rest = parse_path(text, utf8=utf8, null_ok=True)
        except ValueError:
            continue
        assert text.startswith("<") and len(address) < 256
        try:
            parse_params(rest, utf8=utf8)
        except ValueError:
            pass
