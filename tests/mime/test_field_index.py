"""``FieldIndex.pick`` answers ``HEADER.FIELDS`` from a header's fields by name: the same bytes as
``filter_fields``' pass over every field, whatever the list's case, order, repeats and absent names."""

from __future__ import annotations

import itertools

from dovetail.mime.parser import parse_header
from dovetail.mime.sections import FieldIndex, filter_fields

HEADER = (b"Received: from a\r\n\tby b\r\nFrom: Alice <a@example.org>\r\nTo: b@example.org\r\n"
          b"received: from c\r\nSubject: hi\r\nnot a field line\r\nCc: c@example.org\r\nX-Last: no CRLF")
NAMES = ("From", "to", "RECEIVED", "Cc", "Subject", "Missing", "x-last")


def test_pick_gives_what_filter_fields_gives() -> None:
    for block in (HEADER + b"\r\n\r\n", HEADER, b"\r\n", b"From: only\r\n\r\n"):
        fields = parse_header(block, 0, len(block))[0].fields
        index = FieldIndex(fields)
        for n in range(1, 4):
            for names in itertools.permutations(NAMES, n):
                assert index.pick(names) == filter_fields(block, fields, names, False), names
        assert index.pick(("From", "from", "FROM")) == filter_fields(block, fields, ("From",), False)
