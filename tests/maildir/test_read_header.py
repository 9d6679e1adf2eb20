"""``read_header`` reads only the start of a large message: what it gives must be the header block of
the whole message, wherever the header ends relative to its first read."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail.maildir.messagefacts import _HEAD_READ, header_block, read_header
from dovetail.mime.parser import to_crlf


def _cases() -> list[bytes]:
    body = b"line of body text\n" * 5000  # larger than a first read
    field = b"X-Pad: " + b"p" * 70 + b"\n"
    out = [b"Subject: s\n\n" + body, b"Subject: s\r\n\r\n" + body.replace(b"\n", b"\r\n"), b"\n" + body,
           b"\r\n" + body, b"Subject: no blank line\n" + body.replace(b"\n", b" ")]
    pad = field * (_HEAD_READ // len(field) + 5)  # a header longer than the first read
    out.append(b"Subject: big\n" + pad + b"\n" + body)
    for shift in range(-3, 4):  # the blank line right at the end of the first read, in LF and CRLF forms
        for nl in (b"\n", b"\r\n"):
            head = b"Subject: edge" + nl
            head += b"X: " + b"y" * (_HEAD_READ - len(head) - 3 - 2 * len(nl) + shift) + nl
            out.append(head + nl + body)
    return out


@pytest.mark.parametrize("raw", _cases())
def test_header_of_first_read_is_the_whole_messages(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "msg"
    path.write_bytes(raw)
    assert read_header(path) == header_block(to_crlf(raw))
