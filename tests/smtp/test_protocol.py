"""The sans-I/O core: state machine, limits, parsing, streaming, with bytes in and events out."""

from __future__ import annotations

import pytest

from dovetail.smtp import events as ev
from dovetail.smtp.limits import Limits
from dovetail.smtp.protocol import SmtpConnection, State
from dovetail.smtp.reply import Reply

from .sansio import Driver, merged, session

TRANSCRIPT = (
    b"EHLO client.test\r\n"
    b"MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=id+2B1\r\n"
    b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40y.test\r\n"
    b"RCPT TO:<Postmaster>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n\r\n..leading dot\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<c@y.test>\r\nBDAT 5\r\nab\r\ncBDAT 0 LAST\r\n"
    b"NOOP\r\nRSET\r\nVRFY bob\r\nHELP\r\nXYZZY\r\nMAIL FROM:bad\r\nQUIT\r\n"
)


def test_one_chunk_and_byte_by_byte_give_the_same_events() -> None:
    whole = Driver()
    whole.feed(TRANSCRIPT)
    bytewise = Driver()
    bytewise.feed_pieces(TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT)))
    assert merged(whole.events) == merged(bytewise.events)
    assert whole.output == bytewise.output
    kinds = [type(e).__name__ for e in merged(whole.events)]
    assert kinds == [
        "Ehlo", "Mail", "Rcpt", "Rcpt", "DataStart", "DataChunk", "MessageEnd",
        "Mail", "Rcpt", "BdatStart", "DataChunk", "BdatEnd", "BdatStart", "BdatEnd",
        "Noop", "Rset", "Vrfy", "Help", "ProtocolError", "ProtocolError", "Quit",
    ]  # fmt: skip
    assert whole.codes()[-4:] == [
        "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        "500 5.5.1 Error: command not recognized",
        "501 5.1.7 Bad sender address syntax: address must be in angle brackets",
        "221 2.0.0 Bye",
    ]
    assert whole.conn.closing


def test_dsn_and_mail_params_are_kept_in_events() -> None:
    d = Driver()
    d.feed(TRANSCRIPT)
    mail = next(e for e in d.events if isinstance(e, ev.Mail))
    assert mail.params == ev.MailParams(size=100, body="8BITMIME", ret="HDRS", envid="id+1")
    rcpt = next(e for e in d.events if isinstance(e, ev.Rcpt))
    assert rcpt.params == ev.RcptParams(notify=("SUCCESS", "DELAY"), orcpt="rfc822;b@y.test")
    assert [e.address for e in d.events if isinstance(e, ev.Rcpt)][1] == "Postmaster"


def test_ehlo_advertises_extensions_and_no_auth_without_tls() -> None:
    conn = SmtpConnection(Limits(max_message_size=1000), tls_available=True, auth_available=True, hostname="mx")
    d = session(conn)
    assert d.replies() == [
        "250-mx", "250-PIPELINING", "250-SIZE 1000", "250-STARTTLS", "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME", "250-DSN", "250-SMTPUTF8", "250 CHUNKING",
    ]  # fmt: skip
    d.feed(b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n")
    assert d.codes()[-1].startswith("538 5.7.11")
    tls = session(SmtpConnection(tls_available=True, auth_available=True, tls_active=True))
    assert "250-AUTH PLAIN LOGIN" in tls.replies() and "250-STARTTLS" not in tls.replies()
    plain = session(SmtpConnection(auth_available=True, auth_plaintext=True))
    assert "250-AUTH PLAIN LOGIN" in plain.replies()


def test_dot_unstuffing_exact_bytes() -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
    content = b"a\r\n..\r\n...x\r\n. \r\nx.\r\n.x\r\n\r\n.."
    d.feed(content + b"\r\n.\r\n")
    assert d.body() == b"a\r\n.\r\n..x\r\n \r\nx.\r\nx\r\n\r\n.\r\n"
    assert isinstance(d.events[-1], ev.MessageEnd)


def test_data_terminator_split_across_reads() -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nline\r")
    for piece in (b"\n", b".", b"\r", b"\n"):
        d.feed(piece)
    assert d.body() == b"line\r\n"
    assert isinstance(d.events[-1], ev.MessageEnd)
    d.feed(b"QUIT\r\n")
    assert d.codes()[-1] == "221 2.0.0 Bye"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a\nb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),  # "<LF>.<LF>" is not an end of data
        (b"a\n.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),  # ".<CR><LF>" after a bare LF is not either
        (b"\n\n.\r\n.\r\n", b"\r\n\r\n\r\n"),
    ],
)
def test_bare_lf_normalized_and_never_ends_data(content: bytes, expected: bytes) -> None:
    d = session()
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n" + content)
    assert d.body() == expected
    assert isinstance(d.events[-1], ev.MessageEnd)


def test_bare_lf_rejected_in_reject_mode() -> None:
    d = session(SmtpConnection(Limits(bare_lf="reject")))
    d.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nok\r\nbad\nmore\r\n.\r\n")
    assert d.codes()[-1] == "550 5.5.2 Error: bare <LF> received"
    assert d.conn.closing
    assert not any(isinstance(e, ev.MessageEnd) for e in d.events)
    cmd = Driver(SmtpConnection(Limits(bare_lf="reject")))
    cmd.feed(b"EHLO x\n")
    assert cmd.codes() == ["550 5.5.2 Error: bare <LF> received"] and cmd.conn.closing


def test_bare_lf_command_accepted_in_normalize_mode() -> None:
    d = Driver()
    d.feed(b"EHLO x\nNOOP\n")
    assert d.codes()[-1] == "250 2.0.0 Ok"


@pytest.mark.parametrize(
    ("commands", "last"),
    [
        (b"MAIL FROM:<a@x.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first"),
        (b"EHLO x\r\nRCPT TO:<a@x.test>\r\n", "503 5.5.1 Error: need MAIL command"),
        (b"EHLO x\r\nDATA\r\n", "503 5.5.1 Error: need MAIL command"),
        (b"EHLO x\r\nMAIL FROM:<>\r\nDATA\r\n", "503 5.5.1 Error: need RCPT command"),
        (b"EHLO x\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n", "503 5.5.1 Error: nested MAIL command"),
        (b"EHLO x\r\nFOO\r\n", "500 5.5.1 Error: command not recognized"),
        (b"EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname"),
        (b"EHLO x\r\nMAIL TO:<a@x.test>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"EHLO x\r\nMAIL FROM:<a@@x>\r\n", "501 5.1.7 Bad sender address syntax: bad address syntax"),
        (
            b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<>\r\n",
            "501 5.1.3 Bad recipient address syntax: null address not allowed here",
        ),  # noqa: E501
        (b"EHLO x\r\nMAIL FROM:<> FOO=1\r\n", "555 5.5.4 Unsupported option: FOO"),
        (b"EHLO x\r\nMAIL FROM:<> SIZE=x\r\n", "501 5.5.4 Bad SIZE parameter syntax"),
        (b"EHLO x\r\nMAIL FROM:<> RET=ALL\r\n", "501 5.5.4 Bad RET parameter value"),
        (b"EHLO x\r\nMAIL FROM:<> ENVID=a+zz\r\n", "501 5.5.4 Bad ENVID parameter syntax"),
        (
            b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.test> NOTIFY=NEVER,SUCCESS\r\n",
            "501 5.5.4 Bad NOTIFY parameter syntax",
        ),  # noqa: E501
        (b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.test> ORCPT=rfc822\r\n", "501 5.5.4 Bad ORCPT parameter syntax"),
        (b"HELO x\r\nMAIL FROM:<> SIZE=10\r\n", "555 5.5.4 Unsupported option: SIZE"),
        (b"EHLO x\r\nMAIL FROM:<j\xc3\xb6@x.test>\r\n", "553 5.6.7 Error: UTF-8 address requires SMTPUTF8"),
        (
            b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<j\xc3\xb6@x.test>\r\n",
            "501 5.1.3 Bad recipient address syntax: UTF-8 address without SMTPUTF8",
        ),  # noqa: E501
        (b"EHLO x\r\nNOOP \xff\r\n", "500 5.5.2 Error: bad UTF-8 syntax"),
        (b"EHLO x\r\nDATA now\r\n", "501 5.5.4 Syntax: DATA"),
        (b"EHLO x\r\nSTARTTLS\r\n", "502 5.5.1 Error: command not implemented"),
        (b"EHLO x\r\nAUTH PLAIN\r\n", "502 5.5.1 Error: command not implemented"),
        (b"EHLO x\r\nEXPN list\r\n", "502 5.5.1 Error: command not implemented"),
        (b"EHLO x\r\nVRFY bob\r\n", "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
        (b"EHLO x\r\nBDAT x\r\n", "501 5.5.4 Syntax: BDAT size [LAST]"),
        (b"EHLO x\r\nNOOP\x00\r\n", "500 5.5.1 Error: command not recognized"),
        (b"EHLO x\r\nRSET \x01\r\n", "501 5.5.2 Error: control character in command"),
    ],
)
def test_rejections(commands: bytes, last: str) -> None:
    d = Driver()
    d.feed(commands)
    assert d.codes()[-1] == last


def test_smtputf8_addresses_accepted_with_param() -> None:
    d = session()
    d.feed("MAIL FROM:<jö@bücher.test> SMTPUTF8\r\nRCPT TO:<ü@例え.jp>\r\n".encode())
    assert d.codes()[-2:] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert d.conn.protocol_name == "UTF8SMTP"
    assert [e.address for e in d.events if isinstance(e, ev.Rcpt)] == ["ü@例え.jp"]


def test_bdat_after_helo_without_mail_consumes_chunk_then_503() -> None:
    d = Driver()
    d.feed(b"EHLO x\r\nBDAT 8\r\nNOOP\r\n\r\nNOOP\r\n")
    assert d.codes()[-2:] == ["503 5.5.1 Error: need MAIL command", "250 2.0.0 Ok"]


def test_recipient_limit() -> None:
    d = session(SmtpConnection(Limits(max_recipients=2)))
    d.feed(b"MAIL FROM:<>\r\n" + b"".join(b"RCPT TO:<r%d@x.test>\r\n" % i for i in range(3)))
    assert d.codes()[-3:] == ["250 2.1.5 Ok", "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients"]
    d.feed(b"DATA\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<r9@x.test>\r\n")
    assert d.codes()[-1] == "250 2.1.5 Ok"  # the count is per message


def test_size_limit_by_param_and_by_content() -> None:
    limits = Limits(max_message_size=1000)
    d = session(SmtpConnection(limits))
    d.feed(b"MAIL FROM:<> SIZE=1001\r\n")
    assert d.codes()[-1] == "552 5.3.4 Message size exceeds fixed limit"
    d.feed(b"MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
    d.feed(b"x" * 98 + b"\r\n")
    d.feed((b"y" * 98 + b"\r\n") * 20 + b".\r\n")
    aborts = [e for e in d.events if isinstance(e, ev.DataAbort)]
    assert len(aborts) == 1
    assert len(d.body()) <= 1000
    assert d.codes()[-1] == "552 5.3.4 Message size exceeds fixed limit"
    assert not any(isinstance(e, ev.MessageEnd) for e in d.events)
    d.feed(b"MAIL FROM:<>\r\n")
    assert d.codes()[-1] == "250 2.1.0 Ok"  # the transaction was reset, the session goes on


def test_exactly_max_size_is_accepted() -> None:
    d = session(SmtpConnection(Limits(max_message_size=1000)))
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n" + (b"z" * 98 + b"\r\n") * 10 + b".\r\n")
    assert len(d.body()) == 1000 and isinstance(d.events[-1], ev.MessageEnd)


def test_data_line_length_limit() -> None:
    d = session(SmtpConnection(Limits(max_line_length=100)))
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n" + b"a" * 98 + b"\r\n.\r\n")
    assert isinstance(d.events[-1], ev.MessageEnd)
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nDATA\r\nok\r\n")
    d.feed(b"a" * 60)
    d.feed(b"a" * 60 + b"\r\n.\r\n")
    assert d.codes()[-1] == "552 5.6.0 Error: message line longer than 100 octets"


def test_command_line_too_long_is_skipped_and_answered() -> None:
    d = session(SmtpConnection(Limits(max_command_line=100)))
    d.feed(b"NOOP " + b"x" * 200)
    d.feed(b"y" * 200 + b"\r\nNOOP\r\n")
    assert d.codes()[-2:] == ["500 5.5.2 Error: command line too long", "250 2.0.0 Ok"]
    assert d.conn.buffered == 0


def test_hard_error_limit_disconnects() -> None:
    d = session(SmtpConnection(Limits(max_errors=3)))
    d.feed(b"BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    assert d.codes()[-1] == "421 4.7.0 localhost Error: too many errors"
    assert d.codes().count("500 5.5.1 Error: command not recognized") == 3
    assert d.conn.closing and d.conn.state is State.CLOSED


def test_junk_commands_count_as_errors_past_limit() -> None:
    d = session(SmtpConnection(Limits(max_errors=2, max_junk_commands=3)))
    d.feed(b"NOOP\r\n" * 10)
    assert d.codes()[-1].startswith("421 4.7.0")
    assert d.codes().count("250 2.0.0 Ok") == 5


def test_starttls_discards_pipelined_plaintext_and_requires_ehlo() -> None:
    d = session(SmtpConnection(tls_available=True))
    d.feed(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@x.test>\r\n")
    assert d.codes()[-1] == "220 2.0.0 Ready to start TLS"
    assert [type(e) for e in d.events[-1:]] == [ev.StartTls]
    assert d.conn.buffered == 0 and d.conn.tls_active and d.conn.state is State.INIT
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert d.codes()[-1] == "503 5.5.1 Error: send HELO/EHLO first"
    d.feed(b"EHLO again\r\n")
    assert "250-STARTTLS" not in d.replies()[-9:]


def test_auth_exchange_state() -> None:
    def answer(conn: SmtpConnection, event: ev.Event) -> Reply:
        if isinstance(event, ev.Auth):
            return Reply(235, "2.7.0", "Authentication successful")
        return conn.default_reply(event)

    conn = SmtpConnection(auth_available=True, auth_plaintext=True)
    d = Driver(conn, answer)
    d.feed(b"EHLO x\r\nAUTH PLAIN\r\nAGFsaWNlAHMzY3JldA==\r\nAUTH PLAIN\r\n")
    assert d.events[1:3] == [ev.AuthChallenge(""), ev.Auth("PLAIN", "alice", "s3cret")]
    assert conn.authenticated and d.codes()[-1] == "503 5.5.1 Error: already authenticated"
    assert conn.protocol_name == "ESMTPA"
    cancel = Driver(SmtpConnection(auth_available=True, auth_plaintext=True), answer)
    cancel.feed(b"EHLO x\r\nAUTH LOGIN\r\n*\r\nAUTH FOO\r\n")
    assert cancel.codes()[-2:] == ["501 5.7.0 Authentication aborted", "504 5.5.4 Unrecognized authentication type"]


def test_auth_sasl_outcomes_as_events() -> None:
    conn = SmtpConnection(auth_available=True, auth_plaintext=True)
    d = session(conn)
    d.feed(b"AUTH PLAIN Ym9iAGFsaWNlAHMzY3JldA==\r\n")  # bob\0alice\0s3cret
    refused = d.events[-1]
    assert isinstance(refused, ev.AuthRefused) and (refused.mechanism, refused.username) == ("PLAIN", "alice")
    assert d.codes()[-1].startswith("535 5.7.8 ")
    d.feed(b"AUTH LOGIN YWxpY2U=\r\n")  # the user name as initial response
    assert d.events[-1] == ev.AuthChallenge("UGFzc3dvcmQ6") and d.codes()[-1] == "334 UGFzc3dvcmQ6"
    d.feed(b"\xff\xfe\r\n")  # not even UTF-8: bad base64, not a crash
    assert d.codes()[-1] == "501 5.5.2 Error: cannot decode response"
    d.feed(b"AUTH PLAIN =\r\nAUTH LOGIN\r\n" + b"QUFB" * 4000 + b"\r\nNOOP\r\n")
    assert d.codes()[-4:] == ["501 5.5.2 Error: invalid PLAIN response", "334 VXNlcm5hbWU6",
                              "500 5.5.2 Error: command line too long", "250 2.0.0 Ok"]
    assert not conn.authenticated


def test_data_chunks_are_bounded() -> None:
    limits = Limits(chunk_size=1024)
    d = session(SmtpConnection(limits))
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
    body = b"".join(b"%05d " % i + b"." * 70 + b"\r\n" for i in range(2000))
    d.feed(body + b".\r\n")
    chunks = [e for e in d.events if isinstance(e, ev.DataChunk)]
    assert len(chunks) > 100
    assert max(len(c.data) for c in chunks) <= 1024
    assert d.body() == body


def test_bdat_chunks_bounded_and_raw() -> None:
    d = session(SmtpConnection(Limits(chunk_size=512)))
    payload = b".dots\n stay\r\n.\r\n" * 100
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nBDAT %d LAST\r\n" % len(payload) + payload)
    assert d.body() == payload
    assert max(len(e.data) for e in d.events if isinstance(e, ev.DataChunk)) <= 512
    assert d.events[-1] == ev.BdatEnd(len(payload), True)


def test_bdat_over_size_limit_discards_then_552() -> None:
    d = session(SmtpConnection(Limits(max_message_size=1000)))
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nBDAT 600\r\n" + b"a" * 600)
    d.feed(b"BDAT 600 LAST\r\n" + b"b" * 600 + b"NOOP\r\n")
    assert any(isinstance(e, ev.DataAbort) for e in d.events)
    assert d.codes()[-3:] == ["250 2.0.0 Ok: 600 octets received", "552 5.3.4 Message size exceeds fixed limit",
                              "250 2.0.0 Ok"]  # fmt: skip
    d.feed(b"DATA\r\n")
    assert d.codes()[-1] == "503 5.5.1 Error: need MAIL command"


def test_data_after_bdat_refused() -> None:
    d = session()
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nBDAT 3\r\nabcDATA\r\n")
    assert d.codes()[-1] == "503 5.5.1 Error: DATA after BDAT"


def test_next_event_requires_reply() -> None:
    conn = SmtpConnection()
    conn.receive_data(b"EHLO x\r\nNOOP\r\n")
    conn.next_event()
    with pytest.raises(RuntimeError):
        conn.next_event()
    with pytest.raises(RuntimeError):
        SmtpConnection().send_reply(Reply(250, "2.0.0", "Ok"))


def test_reply_rendering() -> None:
    assert Reply(250, "2.0.0", "Ok").render() == b"250 2.0.0 Ok\r\n"
    assert Reply(250, "", "a\nb\nc").render() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.1.1", "one\ntwo").render() == b"550-5.1.1 one\r\n550 5.1.1 two\r\n"
    assert Reply(334, "", "").render() == b"334 \r\n"
    assert Reply(250, "", "inject\rX").render() == b"250 inject X\r\n"
    with pytest.raises(ValueError):
        Reply(99)
