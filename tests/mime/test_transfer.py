"""Quoted-printable decoding for BINARY (RFC 2045 §6.7) and base64 storage of literal8 binary parts."""

from __future__ import annotations

import base64
import quopri

from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.mime.binaryconv import encode_binary_parts
from dovetail.mime.parser import parse_message
from dovetail.mime.transfer import decode_quoted_printable


def test_rfc2045_rules() -> None:
    body = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\n"
            b"foo =\r\n=62\r\nfoo  \r\nbar=\r\n\r\nfoo_bar\r\n")
    assert decode_quoted_printable(body) == (
        b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\nfoo_bar\r\n")
    assert decode_quoted_printable(b"a=3D=3db") == b"a==b"  # lower-case hex accepted
    assert decode_quoted_printable(b"x=4") == b"x=4"  # not an escape: kept
    assert decode_quoted_printable(b"x=ZZ\n") == b"x=ZZ\r\n"
    assert decode_quoted_printable(b"no newline") == b"no newline"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_agrees_with_quopri_on_what_it_encodes(data: bytes) -> None:
    # quopri's own output has no trailing white space and no "= " soft breaks, so both decoders agree.
    encoded = quopri.encodestring(data.replace(b"\r", b""))
    assert decode_quoted_printable(encoded).replace(b"\r\n", b"\n") == quopri.decodestring(encoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    assert isinstance(decode_quoted_printable(data), bytes)


def test_binary_parts_become_base64() -> None:
    blob = b"\x00-\xe4\n\r\n\n"
    msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\nContent-Transfer-Encoding: binary\r\n"
           b"X-Keep: yes\r\n\r\n" + blob + b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n")
    out = encode_binary_parts(msg)
    assert b"\x00" not in out and b"X-Keep: yes\r\n" in out
    first, second = parse_message(out).children
    assert first.header.get("content-transfer-encoding") == "base64"
    assert base64.b64decode(b"".join(out[first.body_start : first.end].split())) == blob
    assert out[second.body_start : second.end] == b"hi"
    plain = b"Subject: x\r\n\r\nbinary words but no binary part\r\n"
    assert encode_binary_parts(plain) == plain
