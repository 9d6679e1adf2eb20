"""RFC 3516 BINARY end to end: a literal8 APPEND of a ``Content-Transfer-Encoding: binary`` part keeps
its exact bytes (NULs and bare LFs) for BINARY[], while BODY[] shows base64 (as Dovecot stores it), and
BINARY[] of a quoted-printable part follows RFC 2045's decoding rules."""

from __future__ import annotations

import base64

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage

BLOB = b"\x00-\xe4\n\r\n\n"
BINARY_MSG = (b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n" + BLOB)
QP_MSG = (b"From: user@domain.org\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
          b"hello  \r\nfoo\t \t= \r\n=62\r\n")


def test_literal8_append_and_binary_fetch(make_server) -> None:
    srv = make_server()
    c = raw_login(srv)
    c.send(b"a APPEND INBOX ~{%d}\r\n" % len(BINARY_MSG))
    assert c.readline().startswith(b"+")
    c.send(BINARY_MSG + b"\r\n")
    assert c.read_until_tagged(b"a")[-1].startswith(b"a OK")
    c.send(b"q APPEND INBOX {%d}\r\n" % len(QP_MSG))
    assert c.readline().startswith(b"+")
    c.send(QP_MSG + b"\r\n")
    assert c.read_until_tagged(b"q")[-1].startswith(b"q OK")
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")

    lines = c.cmd(b"z FETCH 1 BINARY.SIZE[1]")
    assert b"BINARY.SIZE[1] %d" % len(BLOB) in lines[0]
    assert c.fetch_literal(b"b", b"FETCH 1 BINARY.PEEK[1]") == BLOB
    body = c.fetch_literal(b"c", b"FETCH 1 BODY.PEEK[1]")
    assert body is not None and b"\x00" not in body and base64.b64decode(b"".join(body.split())) == BLOB
    assert c.fetch_literal(b"d", b"FETCH 2 BINARY.PEEK[1]") == b"hello\r\nfoo\t \tb\r\n"
    c.close()


def test_fetch_preview(make_server) -> None:
    c = raw_login(make_server())
    msg = b"From: a@b.c\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCaf\xc3\xa9 at noon?\r\n"
    c.send(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert c.read_until_tagged(b"a")[-1].startswith(b"a OK")
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    # Without UTF8=ACCEPT the 8-bit preview comes as a literal; PREVIEW (LAZY) is accepted.
    assert c.fetch_literal(b"p", b"FETCH 1 (PREVIEW (LAZY))") == "Café at noon?".encode()
    assert c.cmd(b"q FETCH 1 (PREVIEW (EAGER))")[-1].startswith(b"q BAD")
    c.close()
