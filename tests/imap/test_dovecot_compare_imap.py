"""Our server and Dovecot serve the same Maildir: FETCH answers must agree item by item.

Dovecot receives the messages (so it writes the Maildir and its dovecot-uidlist), answers first, and
then our server serves that very directory; UIDs, sizes, dates, structures and section bytes are
compared as imapclient parses them, so quoting versus literals does not matter.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from imapclient import IMAPClient

from dovetail.imap.limits import Limits
from dovetail.imap.server import ImapServer
from dovetail.mailauth.accounts import Account
from dovetail.mime.parser import to_crlf
from tests.imap.imap_testkit import RawClient, ServerThread, needs_storage
from tests.interop_dovecot import dovecot  # noqa: F401

pytestmark = [pytest.mark.interop, needs_storage]

CORPUS = sorted((Path(__file__).parent.parent / "mime" / "corpus").glob("*.eml"))
ITEMS = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
         "BODY.PEEK[]", "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]",
         "BODY.PEEK[2]", "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]", "BODY.PEEK[HEADER.FIELDS.NOT (FROM)]",
         "BODY.PEEK[]<10.20>"]
BINARY_PARTS = ["1", "2", "1.1", "2.1"]  # read raw: imapclient does not parse literal8 (~{n})
SEARCHES = [["ALL"], ["SEEN"], ["UNSEEN"], ["FLAGGED"], ["LARGER", "1000"], ["SUBJECT", "a"], ["TEXT", "the"],
            ["NOT", "DELETED"], ["OR", "FLAGGED", "ANSWERED"], ["1:3"]]


def binaries(port: int, user: bytes, uids: list[int]) -> dict[tuple[int, str], bytes | None]:
    c = RawClient(port)
    assert c.cmd(b"l LOGIN " + user + b" pw")[-1].startswith(b"l OK")
    c.cmd(b"s EXAMINE INBOX")
    out = {}
    for uid in uids:
        for part in BINARY_PARTS:
            out[(uid, part)] = c.fetch_literal(b"f", b"UID FETCH %d (BINARY.PEEK[%s])" % (uid, part.encode()))
            lines = c.cmd(b"g UID FETCH %d (BINARY.SIZE[%s])" % (uid, part.encode()))
            m = re.search(rb"BINARY\.SIZE\[[\d.]+\] (\d+)", b" ".join(lines))
            out[(uid, "size " + part)] = int(m.group(1)) if m else None
    c.close()
    return out


def is_leaf(bs, part: str) -> bool:
    """Whether a part path names a single, non-message part (Dovecot re-encodes nested parts of a
    multipart for BINARY, which we do not)."""
    node = bs
    for p in (int(x) for x in part.split(".")):
        if node.is_multipart:
            if p > len(node[0]):
                return False
            node = node[0][p - 1]
        elif p != 1:
            return False
    return not node.is_multipart and node[0].lower() != b"message"


class OneUser:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def authenticate(self, username: str, password: str, client_ip: str) -> Account | None:
        return Account(username, self.root) if password == "pw" else None


def answers(client: IMAPClient) -> tuple[dict, list, list]:
    client.select_folder("INBOX")
    uids = client.search("ALL")
    fetched = {}
    for item in ITEMS:  # one item at a time: a part missing in one message must not hide the rest
        for uid, data in client.fetch(uids, [item]).items():
            data.pop(b"SEQ", None)
            if b"FLAGS" in data:
                data[b"FLAGS"] = set(data[b"FLAGS"]) - {b"\\Recent"}  # order and \Recent are per session
            fetched.setdefault(uid, {}).update(data)
    searches = [sorted(client.search(keys)) for keys in SEARCHES]
    return fetched, searches, [f[2] for f in client.list_folders()]


def test_fetch_and_search_match_dovecot(dovecot, tmp_path):  # noqa: F811
    box = dovecot.add_user("u@example.org", "pw")
    d = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10)
    d.login("u@example.org", "pw")
    d.create_folder("Work")
    for i, path in enumerate(CORPUS):
        flags = [b"\\Seen"] if i % 2 else [b"\\Flagged"]
        d.append("INBOX", to_crlf(path.read_bytes()), flags=flags)
    want = answers(d)
    want_binary = binaries(dovecot.port, b"u@example.org", sorted(want[0]))
    d.logout()


    srv = ServerThread(ImapServer(OneUser(box), limits=Limits()))
    try:
        c = IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
        c.login("u@example.org", "pw")
        got = answers(c)
        got_binary = binaries(srv.port, b"u@example.org", sorted(got[0]))
        c.logout()
    finally:
        srv.stop()
    compared = 0
    for (uid, part), value in want_binary.items():
        if is_leaf(want[0][uid][b"BODYSTRUCTURE"], part.removeprefix("size ")):
            assert got_binary[(uid, part)] == value, (uid, part)
            compared += 1
    assert compared > len(CORPUS)
    want_fetch, want_search, want_list = want
    got_fetch, got_search, got_list = got
    assert sorted(got_fetch) == sorted(want_fetch)
    for uid in want_fetch:
        for key in want_fetch[uid]:
            assert got_fetch[uid].get(key) == want_fetch[uid][key], (uid, key)
    assert got_search == want_search
    assert sorted(got_list) == sorted(want_list)
