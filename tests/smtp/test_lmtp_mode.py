"""The sans-I/O core in LMTP mode (RFC 2033): LHLO, and one reply per accepted recipient after the data."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.smtp import events as ev
from dovetail.smtp.limits import Limits
from dovetail.smtp.protocol import SmtpConnection
from dovetail.smtp.reply import Reply

from .sansio import Driver


class LmtpDriver(Driver):
    """Answers the end of data with a reply per recipient, as an LMTP backend does."""

    def __init__(self, conn: SmtpConnection | None = None) -> None:
        super().__init__(conn or SmtpConnection(hostname="mbox.test", lmtp=True))
        self.rcpts: list[str] = []
        self.due: list[int] = []

    def feed(self, data: bytes) -> list[ev.Event]:
        self.conn.receive_data(data)
        got = []
        while True:
            event = self.conn.next_event()
            if isinstance(event, ev.NeedData):
                break
            got.append(event)
            if not event.needs_reply:
                continue
            if isinstance(event, ev.Mail):
                self.rcpts = []
            if isinstance(event, ev.Rcpt):
                self.rcpts.append(event.address)
            if isinstance(event, ev.MessageEnd) or (isinstance(event, ev.BdatEnd) and event.last):
                self.due.append(self.conn.replies_due)
                replies = [_outcome(a) for a in self.rcpts]
                self.rcpts = []
                self.output += self.conn.send_replies(replies)
            else:
                self.output += self.conn.send_reply(self.conn.default_reply(event))
        self.events += got
        return got


def _outcome(address: str) -> Reply:
    if address.startswith("over@"):
        return Reply(552, "5.2.2", f"<{address}> Mailbox is full")
    if address.startswith("later@"):
        return Reply(452, "4.2.2", f"<{address}> Mailbox is full")
    return Reply(250, "2.0.0", f"<{address}> Ok: delivered")


def lmtp_session() -> LmtpDriver:
    d = LmtpDriver()
    d.feed(b"LHLO client.test\r\n")
    return d


def test_greeting_and_lhlo_lists_extensions() -> None:
    conn = SmtpConnection(hostname="mbox.test", lmtp=True)
    assert conn.greeting() == b"220 mbox.test LMTP Dovetail\r\n"
    d = lmtp_session()
    lines = d.replies()
    assert lines[0] == "250-mbox.test"
    assert "250-PIPELINING" in lines and "250-ENHANCEDSTATUSCODES" in lines
    assert isinstance(d.events[0], ev.Lhlo)


def test_helo_and_ehlo_are_refused_in_lmtp_and_lhlo_in_smtp() -> None:
    d = LmtpDriver()
    d.feed(b"EHLO client.test\r\nHELO client.test\r\nMAIL FROM:<a@b.example>\r\n")
    assert d.codes() == ["500 5.5.1 Error: this is LMTP: use LHLO"] * 2 + ["503 5.5.1 Error: send LHLO first"]
    smtp = Driver(SmtpConnection(hostname="mx.test"))
    smtp.feed(b"LHLO client.test\r\n")
    assert smtp.codes() == ["500 5.5.1 Error: command not recognized"]


def test_one_reply_per_accepted_recipient_in_rcpt_order() -> None:
    d = lmtp_session()
    d.output.clear()
    d.feed(b"MAIL FROM:<s@x.example>\r\nRCPT TO:<a@m.example>\r\nRCPT TO:<over@m.example>\r\n"
           b"RCPT TO:<later@m.example>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
    assert d.codes() == [
        "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 <a@m.example> Ok: delivered",
        "552 5.2.2 <over@m.example> Mailbox is full",
        "452 4.2.2 <later@m.example> Mailbox is full",
    ]
    assert d.due == [3]
    assert d.conn.in_transaction is False
    d.output.clear()  # a second transaction on the same connection counts afresh
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@m.example>\r\nDATA\r\nx\r\n.\r\n")
    assert d.codes()[-1] == "250 2.0.0 <b@m.example> Ok: delivered"
    assert d.due == [3, 1]


def test_refused_recipients_get_no_reply_after_data() -> None:
    def answer(conn: SmtpConnection, event: ev.Event) -> Reply:
        if isinstance(event, ev.Rcpt) and event.address.startswith("nobody@"):
            return Reply(550, "5.1.1", "User unknown")
        return conn.default_reply(event) if not isinstance(event, ev.MessageEnd) else Reply(250, "2.0.0", "Ok")

    d = Driver(SmtpConnection(hostname="mbox.test", lmtp=True), answer)
    d.feed(b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<nobody@m.example>\r\nRCPT TO:<a@m.example>\r\n"
           b"RCPT TO:<b@m.example>\r\nDATA\r\nbody\r\n.\r\n")
    # send_reply at the end of data repeats one reply for each accepted recipient (2 of 3)
    assert d.codes()[-3:] == ["354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok", "250 2.0.0 Ok"]


def test_oversized_message_is_refused_once_per_recipient() -> None:
    d = LmtpDriver(SmtpConnection(Limits(max_message_size=100), hostname="mbox.test", lmtp=True))
    d.feed(b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@m.example>\r\nRCPT TO:<b@m.example>\r\nDATA\r\n")
    d.output.clear()
    d.feed(b"x" * 300 + b"\r\n.\r\n")
    assert d.codes() == ["552 5.3.4 Message size exceeds fixed limit"] * 2
    d.output.clear()
    d.feed(b"NOOP\r\n")
    assert d.codes() == ["250 2.0.0 Ok"]


def test_bdat_last_is_answered_per_recipient_and_earlier_chunks_once() -> None:
    d = lmtp_session()
    d.output.clear()
    d.feed(b"MAIL FROM:<s@x.example>\r\nRCPT TO:<a@m.example>\r\nRCPT TO:<over@m.example>\r\n"
           b"BDAT 5\r\nhello")
    d.feed(b"BDAT 6 LAST\r\n world")
    assert d.codes()[3:] == ["250 2.0.0 Ok: 5 octets received", "250 2.0.0 <a@m.example> Ok: delivered",
                             "552 5.2.2 <over@m.example> Mailbox is full"]
    assert d.body() == b"hello world"


def test_wrong_number_of_replies_is_a_programming_error() -> None:
    conn = SmtpConnection(hostname="mbox.test", lmtp=True)
    d = Driver(conn)
    d.feed(b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@m.example>\r\nRCPT TO:<b@m.example>\r\nDATA\r\n")
    conn.receive_data(b"x\r\n.\r\n")
    while not isinstance(conn.next_event(), ev.MessageEnd):
        pass
    assert conn.replies_due == 2
    with pytest.raises(ValueError):
        conn.send_replies([Reply(250, "2.0.0", "Ok")])


def test_received_protocol_name_is_lmtp() -> None:
    d = lmtp_session()
    assert d.conn.protocol_name == "LMTP"
    d.feed(b"MAIL FROM:<s@x.example> SMTPUTF8\r\n")
    assert d.conn.protocol_name == "UTF8LMTP"


VERBS = ["LHLO c", "EHLO c", "MAIL FROM:<s@x.example>", "RCPT TO:<a@m.example>", "RCPT TO:<over@m.example>",
         "RCPT TO:<later@m.example>", "DATA", "BDAT 3", "BDAT 2 LAST", "RSET", "NOOP", "QUIT", "x\r\n.", "abc"]
REPLY_LINE = re.compile(r"\A[2-5]\d\d[ -][^\r\n]*\Z")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(VERBS), max_size=30), st.lists(st.integers(1, 40), max_size=20))
def test_fuzzed_sessions_answer_each_end_of_data_once_per_recipient(lines: list[str], cuts: list[int]) -> None:
    """Whatever the order of commands and however the bytes arrive, every end of data takes exactly as many
    replies as recipients were accepted in that transaction, and every line out is a well-formed reply."""
    d = LmtpDriver(SmtpConnection(Limits(max_message_size=64, max_errors=100), hostname="mbox.test", lmtp=True))
    data = "".join(line + "\r\n" for line in lines).encode()
    pos = 0
    for n in cuts:
        d.feed(data[pos:pos + n])
        pos += n
    d.feed(data[pos:])
    for line in d.replies():
        assert REPLY_LINE.match(line), line
    ends = [e for e in d.events if isinstance(e, ev.MessageEnd) or (isinstance(e, ev.BdatEnd) and e.last)]
    assert len(d.due) == len(ends)
    assert all(n >= 1 for n in d.due)
