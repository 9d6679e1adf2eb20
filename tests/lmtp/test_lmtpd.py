"""lmtpd over a real loopback socket: recipients checked at RCPT, each committed before its own reply."""

from __future__ import annotations

import asyncio
import os
import socket

from dovetail.intake.lmtp import HOLD_BYTES
from dovetail.master.supervisor import bind_unix_socket

from .conftest import Node, talk

MESSAGE = b"From: alice@ext.example\r\nSubject: over lmtp\r\n\r\nhello\r\n.\r\n"


def _final(lines: list[str]) -> list[str]:
    return [line for line in lines if line[3:4] == " "]


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_each_recipient_gets_its_own_reply_after_data(node: Node) -> None:
    # fill "full@" beyond its 1000-byte quota with one big delivery (quota is checked before writing)
    full = node.maildir("full@acme.example")
    from dovetail.storage import open_storage

    open_storage(full, create=True).deliver([b"Subject: filler\r\n\r\n" + b"x" * 2000 + b"\r\n"])

    async def scenario() -> list[str]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            return await talk(server.port, [
                b"LHLO mx.test\r\n", b"MAIL FROM:<alice@ext.example>\r\n",
                b"RCPT TO:<bob@acme.example>\r\n", b"RCPT TO:<nobody@acme.example>\r\n",
                b"RCPT TO:<away@acme.example>\r\n", b"RCPT TO:<team@acme.example>\r\n",
                b"RCPT TO:<full@acme.example>\r\n", b"DATA\r\n", MESSAGE, b"QUIT\r\n"])
        finally:
            await server.stop(1)

    lines = _final(run(scenario()))
    assert lines[0].startswith("220 mbox.test LMTP")
    assert lines[1] == "250 SMTPUTF8" or lines[1].startswith("250 ")
    assert lines[2] == "250 2.1.0 Ok"
    assert lines[3] == "250 2.1.5 Ok"
    assert lines[4].startswith("550 5.1.1 <nobody@acme.example>: no mailbox here: user unknown")
    assert lines[5].startswith("550 5.1.1 <away@acme.example>: no mailbox here")
    assert lines[6] == "250 2.1.5 Ok"
    assert lines[7].startswith("452 4.2.2 <full@acme.example>")  # over quota, refused at RCPT (defer policy)
    assert lines[8].startswith("354 ")
    assert lines[9:11] == ["250 2.0.0 <bob@acme.example> Saved", "250 2.0.0 <team@acme.example> Saved"]
    assert lines[11].startswith("221 ")
    bob = node.messages("bob@acme.example")
    carol = node.messages("carol@acme.example")
    assert len(bob) == 1 and len(carol) == 1  # one copy per Maildir, though bob is named twice (directly, team@)
    assert b"Delivered-To: bob@acme.example" in bob[0]
    assert b"with LMTP id" in bob[0] and b"Subject: over lmtp" in bob[0]


def test_quota_at_end_of_data_is_per_recipient(node: Node) -> None:
    """full@ has room at RCPT (one byte fits) but not for this message: 452 for it, 250 for bob."""
    big = b"Subject: big\r\n\r\n" + b"y" * 1500 + b"\r\n.\r\n"

    async def scenario() -> list[str]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            return await talk(server.port, [b"LHLO mx.test\r\nMAIL FROM:<>\r\nRCPT TO:<full@acme.example>\r\n"
                                            b"RCPT TO:<bob@acme.example>\r\nDATA\r\n", big, b"QUIT\r\n"])
        finally:
            await server.stop(1)

    lines = _final(run(scenario()))
    assert lines[-3].startswith("452 4.2.2 <full@acme.example>")
    assert lines[-2] == "250 2.0.0 <bob@acme.example> Saved"
    assert len(node.messages("bob@acme.example")) == 1
    assert not (node.maildir("full@acme.example") / "new").exists() or not node.messages("full@acme.example")


def test_large_message_goes_through_a_spool_file_that_is_removed(node: Node) -> None:
    body = b"".join(b"line %d of a large message\r\n" % i for i in range(HOLD_BYTES // 20))

    async def scenario() -> list[str]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            return await talk(server.port, [b"LHLO mx.test\r\nMAIL FROM:<a@ext.example>\r\n"
                                            b"RCPT TO:<carol@acme.example>\r\nDATA\r\nSubject: big\r\n\r\n",
                                            body, b".\r\nQUIT\r\n"])
        finally:
            await server.stop(1)

    lines = _final(run(scenario()))
    assert lines[-2] == "250 2.0.0 <carol@acme.example> Saved"
    (stored,) = node.messages("carol@acme.example")
    assert body.replace(b"\r\n", b"\n") in stored.replace(b"\r\n", b"\n")
    assert os.listdir(node.root / "spool") == []


def test_clients_outside_the_allowed_networks_are_refused_before_the_greeting(node: Node) -> None:
    async def scenario() -> list[str]:
        server = node.server(allowed=("10.0.0.0/8",))
        await server.start(host="127.0.0.1", port=0)
        try:
            return await talk(server.port, [b"LHLO mx.test\r\n"])
        finally:
            await server.stop(1)

    assert run(scenario()) == ["421 4.7.0 LMTP is not open to your address"]


def test_unix_socket_listener(node: Node) -> None:
    path = str(node.root / "lmtp.sock")
    sock = bind_unix_socket(path)
    assert os.stat(path).st_mode & 0o777 == 0o666

    async def scenario() -> bytes:
        server = node.server(allowed=("10.0.0.0/8",))  # the network gate does not apply to a unix socket
        await server.start(sock=sock)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"LHLO mx.test\r\nMAIL FROM:<>\r\nRCPT TO:<bob@acme.example>\r\nDATA\r\n" + MESSAGE
                         + b"QUIT\r\n")
            out = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            return out
        finally:
            await server.stop(1)

    out = run(scenario())
    assert b"250 2.0.0 <bob@acme.example> Saved\r\n" in out
    assert len(node.messages("bob@acme.example")) == 1
    again = bind_unix_socket(path)  # a stale socket file from an earlier run is replaced
    assert again.family == socket.AF_UNIX
    again.close()


def test_full_disk_defers_with_452_4_3_1(node: Node) -> None:
    """A Maildir on a full file system: the recipient gets ``452 4.3.1`` (try later), nothing half-written."""
    from tests.fulldisk import fill, small_tmpfs

    async def scenario() -> list[str]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            return await talk(server.port, [b"LHLO mx.test\r\nMAIL FROM:<>\r\nRCPT TO:<bob@acme.example>\r\n"
                                            b"DATA\r\n", MESSAGE, b"QUIT\r\n"])
        finally:
            await server.stop(1)

    with small_tmpfs(node.root / "mail", "1m") as mail:
        filler = fill(mail)
        lines = _final(run(scenario()))
        assert lines[-2].startswith("452 4.3.1 <bob@acme.example>"), lines
        filler.unlink()
        assert node.messages("bob@acme.example") == []


def test_a_node_of_ours_names_the_copies_so_a_repeated_delivery_is_stored_once(node: Node) -> None:
    """XDELIVERYID: the sender's queue id, arrival and attempts, and each recipient's index in its queue."""

    def session(attempts: int, rcpt_param: bytes = b" XDELIVERYID=3") -> list[str]:
        async def scenario() -> list[str]:
            server = node.server()
            await server.start(host="127.0.0.1", port=0)
            try:
                return await talk(server.port, [
                    b"LHLO mx.test\r\n",
                    b"MAIL FROM:<alice@ext.example> XDELIVERYID=Q7abc.1765000000.%d\r\n" % attempts,
                    b"RCPT TO:<bob@acme.example>" + rcpt_param + b"\r\n", b"DATA\r\n", MESSAGE, b"QUIT\r\n"])
            finally:
                await server.stop(1)

        return run(scenario())

    first = session(0)
    assert "250-XDELIVERYID" in first or "250 XDELIVERYID" in first
    assert "250 2.0.0 <bob@acme.example> Saved" in first
    # the reply was lost (say the node was killed after the commit): the sender tries again
    again = session(1)
    assert "250 2.0.0 <bob@acme.example> Saved" in again
    box = node.maildir("bob@acme.example")
    names = [p.name for sub in ("new", "cur") for p in (box / sub).iterdir()]
    assert len(names) == 1 and names[0].startswith("1765000000.VQ7abcR3."), names
    bad = session(0, b" XDELIVERYID=x")
    assert any(line.startswith("501 5.5.4 Bad XDELIVERYID") for line in bad)
    assert len(node.messages("bob@acme.example")) == 1


def test_the_smtp_listener_knows_no_xdeliveryid() -> None:
    import pytest

    from dovetail.smtp.address import AddressError, mail_params

    with pytest.raises(AddressError) as refused:
        mail_params({"XDELIVERYID": "Q1.1.0"}, esmtp=True)
    assert refused.value.reply.code == 555
