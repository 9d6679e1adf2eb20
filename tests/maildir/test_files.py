"""dovecot-uidlist, dovecot-keywords and subscriptions as Dovecot 2.3 wrote them (``data/``)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from dovetail.maildir import keywords, subscriptions, uidlist
from dovetail.maildir.filename import info_string, parse_name
from dovetail.maildir.lock import DotLock
from dovetail.storage.api import ANSWERED, SEEN, MailboxInUse

DATA = Path(__file__).parent / "data"


def test_reads_dovecot_uidlist_with_appended_records() -> None:
    ul = uidlist.read(DATA / "dovecot-uidlist")
    assert ul is not None
    assert ul.uidvalidity == 1795881561
    assert ul.guid == "ab426d3958fa0a6b3164000083ecc375"
    assert [u for u in ul.entries] == [1, 2, 3]
    assert ul.entries[3][0] == "1795881560.M997185P25649.vm,S=27,W=31"
    # Dovecot appended records after a header saying N1: the next UID follows the records
    assert ul.nextuid == 4


def test_uidlist_roundtrip(tmp_path: Path) -> None:
    ul = uidlist.read(DATA / "dovecot-uidlist")
    path = tmp_path / "dovecot-uidlist"
    uidlist.write(path, ul)
    text = path.read_text()
    assert text.splitlines()[0] == f"3 V1795881561 N4 G{ul.guid}"
    assert "2 :1700000001.M2P1.host,S=29\n" in text
    again = uidlist.read(path)
    assert again.entries == ul.entries and again.nextuid == 4 and again.uidvalidity == ul.uidvalidity


def test_uidlist_extensions_and_v1() -> None:
    ul = uidlist.parse("3 V5 N9 Gabc\n7 W1234 :name1\n8 :name2\n")
    assert ul.entries[7] == ("name1", "W1234")
    assert "7 W1234 :name1" in uidlist.format_uidlist(ul)
    old = uidlist.parse("1 1234 5\n3 oldname\n")
    assert old.uidvalidity == 1234 and old.entries[3] == ("oldname", "")


def test_uidlist_append_adds_lines_and_moves_the_next_uid(tmp_path: Path) -> None:
    path = tmp_path / "dovecot-uidlist"
    uidlist.write(path, uidlist.parse("3 V5 N9 Gabc\n7 :name1\n"))
    assert uidlist.append(path, [(9, "name2"), (10, "name3")])
    again = uidlist.read(path)
    assert again.entries == {7: ("name1", ""), 9: ("name2", ""), 10: ("name3", "")} and again.nextuid == 11
    assert path.read_text().splitlines()[0] == "3 V5 N9 Gabc"  # the header is left as written


@pytest.mark.parametrize("text", ["1 1234 5\n3 oldname\n", "3 V5 N9 Gabc\n7 :name1"])
def test_uidlist_append_refuses_old_versions_and_torn_lines(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dovecot-uidlist"
    path.write_text(text)
    assert not uidlist.append(path, [(9, "name2")])
    assert path.read_text() == text


@pytest.mark.parametrize("bad", ["", "9 V1\n", "3 V1 N2\n2 :a\n1 :b\n", "3 V1 N2\nx :a\n", "3 V1 N2\n1 :\n"])
def test_corrupt_uidlists_are_refused(bad: str) -> None:
    with pytest.raises(uidlist.UidlistCorrupt):
        uidlist.parse(bad)


def test_keywords_file() -> None:
    kw = keywords.read(DATA / "dovecot-keywords")
    assert kw == {0: "$Forwarded", 1: "Work", 2: "Todo"}
    assert keywords.letter(2) == "c"
    assert not keywords.valid_keyword("bad keyword") and keywords.valid_keyword("$Junk")


def test_subscriptions_file(tmp_path: Path) -> None:
    names = subscriptions.read(DATA / "subscriptions")
    assert names == ["INBOX", "Archive/2023"]
    out = tmp_path / "subscriptions"
    subscriptions.write(out, [*names, "Entwürfe/Sub"])
    assert out.read_text() == "V\t2\n\nINBOX\nArchive\t2023\nEntw&APw-rfe\tSub\n"
    assert subscriptions.read(out) == [*names, "Entwürfe/Sub"]


def test_filenames() -> None:
    n = parse_name("1795881560.M997185P25649.vm,S=27,W=31:2,Sab")
    assert n.basename == "1795881560.M997185P25649.vm,S=27,W=31"
    assert (n.size, n.vsize) == (27, 31)
    assert n.system_flags == {SEEN} and n.keyword_letters == "ab"
    assert parse_name("1700000000.M1P1.host").info == ""
    assert info_string(frozenset({SEEN, ANSWERED}), "ca") == "RSac"


def test_dotlock_excludes_and_breaks_stale_locks(tmp_path: Path) -> None:
    path = tmp_path / "dovecot-uidlist.lock"
    first = DotLock(path)
    first.acquire()
    with pytest.raises(MailboxInUse):
        DotLock(path, wait=0.2).acquire()
    released = threading.Event()

    def later() -> None:
        first.release()
        released.set()

    t = threading.Timer(0.1, later)
    t.start()
    with DotLock(path, wait=5):
        assert released.is_set()
    t.join()
    # a lock left by a dead process on this host, or untouched for two minutes, is stale
    path.write_text(f"999999999:{os.uname().nodename}")
    with DotLock(path, wait=0.5):
        pass
    path.write_text("1:otherhost")
    old = time.time() - 600
    os.utime(path, (old, old))
    with DotLock(path, wait=0.5):
        pass
    assert not path.exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
