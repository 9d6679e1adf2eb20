"""SEARCH's view of a message body: textual parts decoded, other parts left out, and messages nested
far deeper than anyone writes (which anyone can send) searched without error."""

from __future__ import annotations

import base64

from dovetail.mime.text import body_text


def test_text_parts_decoded_attachments_left_out() -> None:
    b64 = base64.encodebytes("Grüße aus Köln".encode()).decode()
    msg = ("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
           "--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 +
           "\r\n--x\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable"
           "\r\n\r\n<p>caf=E9 =\r\nnoir</p>\r\n"
           "--x\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(b"%PDF secret words").decode() +
           "\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n").encode()
    text = body_text(msg)
    assert "Grüße aus Köln" in text and "<p>café noir</p>" in text and "inner body" in text
    assert "secret" not in text and "PDF" not in text
    assert body_text(b"Subject: x\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nplain \xff\r\n") \
        .startswith("plain ")


def test_hostile_nesting_is_searched_without_error() -> None:
    msg = b"Content-Type: text/plain\r\n\r\nleaf text\r\n"
    for i in range(1000):
        b = b"b%d" % i
        msg = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + msg
               + b"\r\n--" + b + b"--\r\n")
    assert "leaf text" in body_text(b"From: x@y.z\r\n" + msg)
    inner = b"Subject: inner\r\n\r\nleaf\r\n"
    for i in range(1000):
        inner = b"Subject: l%d\r\nContent-Type: message/rfc822\r\n\r\n" % i + inner
    assert isinstance(body_text(inner), str)


def test_text_of_crlf_bytes_and_parse_without_line_counts_agree() -> None:
    """The store's short cut (bytes already CRLF, body lines not counted) changes nothing but the
    line counts: every part's offsets and the text are what the full parse gives."""
    from pathlib import Path

    from dovetail.mime.parser import parse_message, to_crlf

    def offsets(part):  # noqa: ANN001, ANN202
        return (part.header_start, part.body_start, part.end, [offsets(c) for c in part.children],
                offsets(part.message) if part.message is not None else None)

    corpus = sorted((Path(__file__).parent / "corpus").glob("*.eml"))
    assert corpus
    for path in corpus:
        crlf = to_crlf(path.read_bytes())
        assert body_text(crlf, crlf=True) == body_text(path.read_bytes())
        full, lean = parse_message(crlf), parse_message(crlf, count_lines=False)
        assert offsets(lean) == offsets(full)
        assert lean.lines == 0 and (full.lines > 0 or full.body_start == full.end
                                    or full.ctype.maintype.lower() not in ("text", "message"))
