"""COMPRESS=DEFLATE (RFC 4978): after the tagged OK both directions are raw deflate; a command the
client compressed right behind COMPRESS is understood; a second COMPRESS is refused; garbage ends
the connection with a BYE."""

from __future__ import annotations

import socket
import zlib

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage


class Deflated:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)
        self.buf = b""

    def pack(self, line: bytes) -> bytes:
        return self.out.compress(line + b"\r\n") + self.out.flush(zlib.Z_SYNC_FLUSH)

    def cmd(self, line: bytes) -> list[bytes]:
        self.sock.sendall(self.pack(line))
        return self.until(line.split(b" ", 1)[0])

    def until(self, tag: bytes) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                assert chunk, f"closed after {lines!r}"
                self.buf += self.inp.decompress(chunk)
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


def test_compress_deflate(make_server) -> None:
    c = raw_login(make_server())
    d = Deflated(c.sock)
    # COMPRESS and, in the same packet, a NOOP already compressed.
    c.send(b"z COMPRESS DEFLATE\r\n" + d.pack(b"n NOOP"))
    assert c.readline().startswith(b"z OK")
    d.buf, c.buf = d.inp.decompress(c.buf), b""  # compressed bytes that came with the OK line
    assert d.until(b"n")[-1].startswith(b"n OK")
    lines = d.cmd(b"l LIST \"\" \"*\"")
    assert lines[-1].startswith(b"l OK") and any(b"INBOX" in ln for ln in lines)
    assert d.cmd(b"y COMPRESS DEFLATE")[-1].startswith(b"y NO [COMPRESSIONACTIVE]")
    c.close()


def test_garbage_after_compress_ends_the_session(make_server) -> None:
    c = raw_login(make_server())
    assert c.cmd(b"z COMPRESS DEFLATE")[-1].startswith(b"z OK")
    assert not c.buf
    c.send(b"\xff\xfe this is not deflate \x00\x01" * 4)
    inp = zlib.decompressobj(-15)
    data = b""
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        data += inp.decompress(chunk)
    assert b"* BYE" in data
