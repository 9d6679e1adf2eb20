"""ENVELOPE, BODYSTRUCTURE, BODY and section bytes compared with what Dovecot answers for the same
messages (the corpus in ``corpus/``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dovetail.mime.imapdata import body_to_imap, envelope_to_imap
from dovetail.mime.parser import parse_message, to_crlf
from dovetail.mime.sections import extract, parse_section
from dovetail.mime.structure import bodystructure, envelope
from tests.interop_dovecot import dovecot  # noqa: F401
from tests.mime.dovecot_wire import literal_or_string, raw_fetch
from tests.mime.imap_values import parse

pytestmark = pytest.mark.interop
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.eml"))
SECTIONS = ["HEADER", "TEXT", "1", "1.MIME", "2", "2.MIME", "1.1", "1.2", "2.HEADER", "2.TEXT", "2.1",
            "2.1.MIME", "HEADER.FIELDS (From To Subject)", "HEADER.FIELDS.NOT (From)", "2.HEADER.FIELDS (Subject)",
            "3", "1.1.1"]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory):
    from tests.interop_dovecot import DovecotInstance
    from tests.support import require_tool

    require_tool("/usr/sbin/dovecot")
    if os.geteuid() != 0:
        pytest.skip("running Dovecot as a separate mail uid needs root")
    inst = DovecotInstance()
    inst.add_user("u@example.org", "pw")
    inst.start()
    try:
        client = inst.imap("u@example.org", "pw")
        out = {}
        for path in CORPUS:
            data = to_crlf(path.read_bytes())
            typ, _ = client.append("INBOX", None, None, data)
            assert typ == "OK"
        client.select("INBOX")
        for uid, path in enumerate(CORPUS, start=1):
            got = {item: raw_fetch(client, uid, item) for item in ("ENVELOPE", "BODYSTRUCTURE", "BODY")}
            for sec in SECTIONS:
                got[sec] = literal_or_string(raw_fetch(client, uid, f"BODY.PEEK[{sec}]"))
            out[path.name] = got
        client.logout()
        yield out
    finally:
        inst.stop()


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_envelope_and_structure_match_dovecot(path: Path, answers) -> None:
    data = to_crlf(path.read_bytes())
    root = parse_message(data)
    want = answers[path.name]
    assert parse(envelope_to_imap(envelope(root.header))) == parse(want["ENVELOPE"])
    assert parse(body_to_imap(bodystructure(data, root))) == parse(want["BODYSTRUCTURE"])
    assert parse(body_to_imap(bodystructure(data, root, extensible=False))) == parse(want["BODY"])


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_sections_match_dovecot(path: Path, answers) -> None:
    data = to_crlf(path.read_bytes())
    root = parse_message(data)
    for sec in SECTIONS:
        assert extract(data, root, parse_section(sec)) == answers[path.name][sec], sec
