"""The MIME corpus against answers recorded from Dovecot 2.3 (``corpus/dovecot-answers.json``), so the
comparison runs without Dovecot; ``test_dovecot_compare.py`` re-asks a live Dovecot when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dovetail.mime.imapdata import body_to_imap, envelope_to_imap
from dovetail.mime.parser import parse_message, to_crlf
from dovetail.mime.sections import extract, parse_section
from dovetail.mime.structure import bodystructure, envelope
from tests.mime.imap_values import parse

CORPUS_DIR = Path(__file__).parent / "corpus"
ANSWERS = json.loads((CORPUS_DIR / "dovecot-answers.json").read_text())
CASES = sorted(ANSWERS)


def _want(name: str, key: str) -> bytes:
    return ANSWERS[name][key].encode("utf-8", "surrogateescape")


def _load(name: str):
    data = to_crlf((CORPUS_DIR / name).read_bytes())
    return data, parse_message(data)


def test_corpus_is_covered() -> None:
    assert sorted(p.name for p in CORPUS_DIR.glob("*.eml")) == CASES


@pytest.mark.parametrize("name", CASES)
def test_envelope(name: str) -> None:
    _data, root = _load(name)
    assert parse(envelope_to_imap(envelope(root.header))) == parse(_want(name, "ENVELOPE"))


@pytest.mark.parametrize("name", CASES)
def test_bodystructure_and_body(name: str) -> None:
    data, root = _load(name)
    assert parse(body_to_imap(bodystructure(data, root))) == parse(_want(name, "BODYSTRUCTURE"))
    assert parse(body_to_imap(bodystructure(data, root, extensible=False))) == parse(_want(name, "BODY"))


@pytest.mark.parametrize("name", CASES)
def test_sections(name: str) -> None:
    data, root = _load(name)
    for key in ANSWERS[name]:
        if key in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
            continue
        assert extract(data, root, parse_section(key)) == _want(name, key), key


def test_encoded_words_stay_raw() -> None:
    _data, root = _load("03-encoded-words.eml")
    env = envelope(root.header)
    assert env[1].startswith("=?ISO-8859-1?B?")
    assert env[2][0][0] == "=?UTF-8?B?SsO2cmcgTcO8bGxlcg==?="


def test_eight_bit_header_becomes_literal() -> None:
    _data, root = _load("04-8bit-headers.eml")
    wire = envelope_to_imap(envelope(root.header))
    assert b"{21}\r\nR\xc3\xa9sum\xc3\xa9 8-bit header" in wire


def test_lf_and_crlf_input_give_the_same_tree() -> None:
    raw = (CORPUS_DIR / "02-multipart-nested.eml").read_bytes()
    a = to_crlf(raw)
    b = to_crlf(raw.replace(b"\n", b"\r\n"))
    assert a == b
    assert bodystructure(a, parse_message(a)) == bodystructure(b, parse_message(b))


@pytest.mark.parametrize(
    "bad", ["0", "1.0", "HEADER.FIELDS", "HEADER.FIELDS ()", "MIME", "1.BOGUS", "TEXT (From)", "1..2", "x" * 20000]
)
def test_bad_section_specs(bad: str) -> None:
    from dovetail.storage.api import InvalidSection

    with pytest.raises(InvalidSection):
        parse_section(bad)


def test_partial_and_missing_parts() -> None:
    from dovetail.mime.sections import apply_partial

    data, root = _load("02-multipart-nested.eml")
    whole = extract(data, root, parse_section(""))
    assert whole == data
    assert apply_partial(whole, (0, 5)) == b"From:"
    assert apply_partial(whole, (len(whole) + 10, 5)) == b""
    assert extract(data, root, parse_section("9")) == b""
    assert extract(data, root, parse_section("1.9.MIME")) == b""
