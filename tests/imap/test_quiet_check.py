"""The quiet check at each command (a few stats, the index's commit counter only behind a dirty stamp)
and the refresh after it that reuses its stamp: what another connection, Dovecot or a delivery changed
before a command is reported in that command's answer (a delivery after FETCH, STORE, SEARCH... once
the last look at the disk is FULL_SYNC_SECONDS old, as Dovecot's fast syncs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dovetail.maildir.stamps import FULL_SYNC_SECONDS
from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import append_messages, msg, raw_login

pytestmark = needs_storage


def age(root: Path) -> None:
    """An old time on the stamped directories and files: the next listing confirms a clean stamp."""
    then = time.time() - 60
    for name in ("cur", "new", "dovecot-uidlist", "dovecot-keywords"):
        if (root / name).exists():
            os.utime(root / name, (then, then))


def two_sessions(srv, tmp_path: Path, count: int):
    """Two sessions with INBOX selected after ``count`` APPENDs, and the INBOX's Maildir."""
    a = raw_login(srv)
    append_messages(a, range(1, count + 1))
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    return a, b, next(tmp_path.glob("mail/**/dovecot-uidlist")).parent


def test_changes_before_a_command_show_in_its_answer(make_server, tmp_path: Path) -> None:
    a, b, root = two_sessions(make_server(), tmp_path, 5)
    warm = b"w FETCH 1:* (FLAGS BODY.PEEK[HEADER] ENVELOPE)"

    def settle() -> None:
        age(root)
        for _ in range(2):  # listed again at the older stamp, then quiet and clean
            assert a.cmd(warm)[-1].startswith(b"w OK")

    settle()
    assert b.cmd(b"k STORE 3 +FLAGS (\\Flagged)")[-1].startswith(b"k OK")  # another connection
    answer = a.cmd(b"f FETCH 1 (FLAGS)")
    assert any(line.startswith(b"* 3 FETCH") and b"\\Flagged" in line for line in answer), answer
    settle()
    name = next(n for n in os.listdir(root / "cur") if n.endswith(":2,"))
    os.rename(root / "cur" / name, root / "cur" / (name + "S"))  # Dovecot sets \Seen
    answer = a.cmd(b"n NOOP")
    assert sum(b" FETCH " in line and b"\\Seen" in line for line in answer) == 1, answer
    settle()
    (root / "tmp" / "1700000999.V1I2M3.mx").write_bytes(msg(9))
    os.rename(root / "tmp" / "1700000999.V1I2M3.mx", root / "new" / "1700000999.V1I2M3.mx")  # a delivery
    assert b"* 6 EXISTS" in a.cmd(b"g NOOP")
    a.close()
    b.close()


def test_a_delivery_shows_in_a_fetch_within_the_full_sync_interval(make_server, tmp_path: Path) -> None:
    """After FETCH, STORE, SEARCH, SORT, THREAD and COPY the disk is looked at only when the last look
    is older than FULL_SYNC_SECONDS (as Dovecot's fast syncs): a delivery another program made shows in
    the answer to such a command within that time, while another session's STORE shows at once."""
    a, b, root = two_sessions(make_server(), tmp_path, 3)
    (root / "tmp" / "1700000999.V1I2M3.mx").write_bytes(msg(9))
    delivered = time.monotonic()
    os.rename(root / "tmp" / "1700000999.V1I2M3.mx", root / "new" / "1700000999.V1I2M3.mx")
    assert b.cmd(b"k STORE 2 +FLAGS (\\Flagged)")[-1].startswith(b"k OK")
    answer = a.cmd(b"f FETCH 1:3 (FLAGS)")
    assert any(line.startswith(b"* 2 FETCH") and b"\\Flagged" in line for line in answer), answer
    seen = b"* 4 EXISTS" in b"".join(answer)
    while not seen and time.monotonic() < delivered + FULL_SYNC_SECONDS + 5:
        seen = b"* 4 EXISTS" in b"".join(a.cmd(b"f FETCH 1 (FLAGS)"))
    assert seen, "the delivery never showed in a FETCH's answer"
    assert time.monotonic() - delivered < FULL_SYNC_SECONDS + 2
    a.close()
    b.close()
