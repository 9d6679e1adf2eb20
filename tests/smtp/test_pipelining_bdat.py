"""PIPELINING (RFC 2920) and CHUNKING (RFC 3030) as raw bytes over a socket: replies come in order."""

from __future__ import annotations

import socket

from .conftest import FileBackend, RawClient


def test_pipelined_transaction_replies_in_order(raw: RawClient, backend: FileBackend) -> None:
    raw.send(b"EHLO client.test\r\n")
    assert raw.reply()[0] == 250
    raw.send(
        b"MAIL FROM:<a@x.test> RET=FULL ENVID=env+2B1\r\n"
        b"RCPT TO:<ok1@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok1@y.test\r\n"
        b"RCPT TO:<unknown@y.test>\r\n"
        b"RCPT TO:<x@elsewhere.example>\r\n"
        b"RCPT TO:<ok2@y.test> NOTIFY=NEVER\r\n"
        b"DATA\r\n"
    )
    assert raw.replies(6) == [
        (250, "2.1.0 Ok"),
        (250, "2.1.5 Ok"),
        (550, "5.1.1 <unknown@y.test>: Recipient address rejected: User unknown"),
        (554, "5.7.1 <x@elsewhere.example>: Relay access denied"),
        (250, "2.1.5 Ok"),
        (354, "End data with <CR><LF>.<CR><LF>"),
    ]
    # after the end of data, the next transaction and QUIT may be pipelined too
    raw.send(b"Subject: one\r\n\r\n..dot\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<ok3@y.test>\r\nDATA\r\n")
    first = raw.replies(4)
    assert first[0][0] == 250 and first[0][1].startswith("2.0.0 Ok: queued as ")
    assert first[1:] == [(250, "2.1.0 Ok"), (250, "2.1.5 Ok"), (354, "End data with <CR><LF>.<CR><LF>")]
    raw.send(b"two\r\n.\r\nNOOP\r\nQUIT\r\n")
    codes = [c for c, _ in raw.replies(3)]
    assert codes == [250, 250, 221]
    assert raw.closed_by_peer()
    one, two = backend.committed
    assert one.body() == b"Subject: one\r\n\r\n.dot\r\n"
    assert one.envelope.ret == "FULL" and one.envelope.envid == "env+1"
    assert [(r.address, r.notify, r.orcpt) for r in one.envelope.recipients] == [
        ("ok1@y.test", ("SUCCESS", "FAILURE"), "rfc822;ok1@y.test"),
        ("ok2@y.test", ("NEVER",), None),
    ]
    assert b"\tby mx.test (Dovetail) with ESMTP id %s;\r\n" % one.queue_id.encode() in one.read()
    assert two.envelope.sender == "" and two.body() == b"two\r\n"


def test_bdat_session_exact_binary_content(raw: RawClient, backend: FileBackend) -> None:
    part1 = b"Subject: chunked\r\n\r\n.leading dot stays\r\n"
    part2 = b"bare\nLF and \x00 NUL stay\r\n.\r\nnot an end\r\n"
    raw.send(b"EHLO x\r\n")
    raw.reply()
    raw.send(
        b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n"
        + b"BDAT %d\r\n" % len(part1)
        + part1
        + b"BDAT %d LAST\r\n" % len(part2)
        + part2
        + b"BDAT 0 LAST\r\nNOOP\r\n"
    )
    replies = raw.replies(6)
    assert replies[:3] == [(250, "2.1.0 Ok"), (250, "2.1.5 Ok"), (250, f"2.0.0 Ok: {len(part1)} octets received")]
    assert replies[3][0] == 250 and replies[3][1].startswith("2.0.0 Ok: queued as ")
    assert replies[4] == (503, "5.5.1 Error: need MAIL command")  # the transaction ended with LAST
    assert replies[5] == (250, "2.0.0 Ok")
    (stored,) = backend.committed
    assert stored.body() == part1 + part2
    assert stored.envelope.body_type == "8BITMIME"


def test_bdat_without_accepted_recipient_consumes_chunk(raw: RawClient, backend: FileBackend) -> None:
    raw.send(b"EHLO x\r\n")
    raw.reply()
    chunk = b"NOOP\r\nNOOP\r\n"
    raw.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<unknown@y.test>\r\nBDAT %d LAST\r\n" % len(chunk) + chunk + b"RSET\r\n")
    assert [c for c, _ in raw.replies(4)] == [250, 550, 503, 250]
    assert backend.messages == []


def test_pipelined_commands_before_half_close_are_answered(raw: RawClient, backend: FileBackend) -> None:
    raw.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
    raw.sock.shutdown(socket.SHUT_WR)
    codes = [c for c, _ in raw.replies(6)]
    assert codes == [250, 250, 250, 354, 250, 221]
    assert raw.closed_by_peer()
    assert backend.committed[0].body() == b"hi\r\n"
