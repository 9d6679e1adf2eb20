"""The sans-I/O session driven directly (no sockets): byte-level robustness, logs, limits."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.imap.commands import CommandSession
from dovetail.imap.limits import Limits
from dovetail.imap.session import ConnInfo, Session
from dovetail.mailauth.accounts import DictAuthenticator
from tests.imap.memstore import MemStorages

MSG = b"From: a@example.com\r\nSubject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n"
LINE_RE = re.compile(rb"^(\* |\+ |\+$|[^ ]+ (OK|NO|BAD) )")


def new_session(limits: Limits | None = None, storages: MemStorages | None = None) -> Session:
    auth = DictAuthenticator({"alice": "pw"}, Path("/nonexistent"))
    return Session(auth, storages or MemStorages(), limits or Limits(auth_fail_base_delay=0.0),
                   ConnInfo(secure=True))


async def converse(sess: Session, chunks: list[bytes]) -> bytes:
    out = sess.greeting()
    for chunk in chunks:
        await sess.receive_data(chunk)
        out += sess.data_to_send()
        if sess.closed:
            break
    return out


def run(sess: Session, data: bytes, chunk: int = 0) -> bytes:
    pieces = [data] if not chunk else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    return asyncio.run(converse(sess, pieces))


SCRIPT = (b"a LOGIN alice pw\r\n"
          b"b APPEND INBOX (\\Seen) {%d}\r\n" % len(MSG) + MSG + b"\r\n"
          b"c SELECT INBOX\r\n"
          b"d FETCH 1 (UID FLAGS BINARY.SIZE[1] BINARY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
          b"e UID SEARCH SUBJECT hi\r\n"
          b"f LOGOUT\r\n")


def test_session_offers_what_the_commands_use():
    """The storage commands see the session only through ``CommandSession``."""
    assert isinstance(new_session(), CommandSession)
    assert not isinstance(object(), CommandSession)


def test_byte_by_byte_gives_the_same_responses():
    whole = run(new_session(), SCRIPT)
    assert b"d OK" in whole and b"BINARY[1] {11}\r\nhello world" in whole
    assert b"BINARY.SIZE[1] 11" in whole
    # dates in APPENDUID/UIDVALIDITY differ between runs only by the clock: compare the shape
    split = run(new_session(), SCRIPT, chunk=1)
    norm = re.compile(rb"\d{6,}")
    assert norm.sub(b"N", split) == norm.sub(b"N", whole)


def test_login_and_logout_logs(caplog):
    with caplog.at_level(logging.INFO):
        sess = new_session()
        sess.conn.remote_ip = "192.0.2.1"
        sess.conn.local_ip = "192.0.2.2"
        sess.conn.tls = True
        out = run(sess, b"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\nb LOGOUT\r\n")
        asyncio.run(sess.connection_lost())
    assert b"a OK" in out
    text = caplog.text
    assert re.search(r"Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.1, lip=192\.0\.2\.2, mpid=\d+, TLS", text)
    assert re.search(r"Disconnected: Logged out in=\d+ out=\d+", text)


def test_append_over_appendlimit_is_toobig():
    sess = new_session(Limits(max_literal=100, auth_fail_base_delay=0.0))
    out = run(sess, b"a LOGIN alice pw\r\nb APPEND INBOX {200}\r\nc APPEND INBOX {300+}\r\n" + b"x" * 300 +
              b"\r\nd NOOP\r\n")
    assert b"b NO [TOOBIG]" in out and b"c NO [TOOBIG]" in out and b"d OK" in out
    assert b"APPENDLIMIT=100" in out


def test_total_command_size_limit():
    sess = new_session(Limits(max_literal=1000, max_command=1500, auth_fail_base_delay=0.0))
    data = (b"a LOGIN alice pw\r\nb APPEND INBOX (\\Seen) {800+}\r\n" + b"x" * 800 +
            b" {800+}\r\n" + b"y" * 800 + b"\r\nc NOOP\r\n")
    out = run(sess, data)
    assert re.search(rb"b (NO|BAD) \[TOOBIG\]", out) and b"c OK" in out


def test_mailbox_names_cannot_escape():
    storages = MemStorages()
    out = run(new_session(storages=storages),
              b"a LOGIN alice pw\r\nb CREATE ../x\r\nc CREATE \"a/../../b\"\r\nd SELECT \"~root\"\r\n"
              b"e CREATE \"&Jjo\"\r\n")
    assert b"b NO [CANNOT]" in out and b"c NO [CANNOT]" in out
    assert b"d NO [CANNOT]" in out and b"e NO [CANNOT]" in out
    assert set(storages.by_user["alice"].boxes) == {"INBOX"}


ALPHABET = [b"a ", b"LOGIN alice pw", b"SELECT INBOX", b"FETCH 1:* (FLAGS BODY[])", b"{3}", b"{3+}",
            b"\r\n", b"\"", b"(", b")", b"IDLE", b"DONE", b"STORE 1 +FLAGS (\\Seen)", b"APPEND INBOX ",
            b"UID ", b"SEARCH ", b"$", b"*", b"\x00", b"\xff", b"AUTHENTICATE PLAIN", b"=", b" "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(ALPHABET), st.binary(max_size=12)), max_size=30))
def test_fuzz_session_never_crashes(pieces):
    sess = new_session(Limits(max_line=300, max_literal=100, max_literal_unauth=20, max_bad_commands=1000,
                              auth_fail_base_delay=0.0, max_auth_attempts=1000))
    out = run(sess, b"".join(pieces) + b"\r\nzz NOOP\r\n")
    assert b"SERVERBUG" not in out
    assert out.startswith(b"* OK")
    # every tagged error names a tag (or "*" when none could be read) and a text
    for m in re.finditer(rb"(?m)^(\S+) BAD (.*)$", out):
        assert m.group(1) and m.group(2).strip()
