"""FETCH PREVIEW's text (RFC 8970): first plain part, else HTML without markup; quotes dropped;
white space collapsed; at most 200 characters and 256 octets."""

from __future__ import annotations

from dovetail.mime.preview import preview


def test_plain_part_wins_and_quotes_go() -> None:
    msg = (b"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n"
           b"Thanks,   that works.\r\n\r\n> earlier text\r\n> more\r\nSee you\r\n"
           b"--x\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--x--\r\n")
    assert preview(msg) == "Thanks, that works. See you"


def test_html_only_and_limits() -> None:
    msg = (b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{}</style></head><body>"
           b"<p>Caf&eacute; &amp; cr\xc3\xa8me</p><script>x()</script></body></html>\r\n")
    assert preview(msg) == "Café & crème"
    long = "é" * 500
    out = preview(b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + long.encode())
    assert len(out) <= 200 and len(out.encode()) <= 256 and set(out) == {"é"}
    assert preview(b"Content-Type: application/pdf\r\n\r\n%PDF") == ""
