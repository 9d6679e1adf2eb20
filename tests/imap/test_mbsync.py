"""mbsync (isync) syncs a local Maildir with the server both ways: new mail, flags, deletions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap.test_commands import msg

MBSYNC = shutil.which("mbsync") or "/usr/bin/mbsync"

pytestmark = pytest.mark.interop

if not os.path.exists(MBSYNC):
    if os.environ.get("CI") == "true":
        raise RuntimeError("mbsync is required in CI")
    pytest.skip("mbsync not installed", allow_module_level=True)


def run_mbsync(conf: Path) -> None:
    proc = subprocess.run([MBSYNC, "-c", str(conf), "-a"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def near_messages(near: Path) -> dict[str, str]:
    """Subject -> maildir flags of each message in the near INBOX."""
    out = {}
    for sub in ("cur", "new"):
        for f in (near / "INBOX" / sub).iterdir():
            subject = next(ln for ln in f.read_bytes().splitlines() if ln.startswith(b"Subject:"))
            flags = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
            out[subject[9:].decode().strip()] = flags
    return out


def server_messages(c: IMAPClient) -> dict[str, set[bytes]]:
    c.select_folder("INBOX")
    data = c.fetch(c.search("ALL"), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    return {v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip():
            set(v[b"FLAGS"]) - {b"\\Recent"} for v in data.values()}


def test_mbsync_two_way(mail_server, tmp_path):
    near = tmp_path / "near"
    near.mkdir()
    conf = tmp_path / "mbsyncrc"
    conf.write_text(f"""IMAPAccount far
Host 127.0.0.1
Port {mail_server.port}
User alice
Pass wonderland
SSLType None
AuthMechs LOGIN

IMAPStore far
Account far

MaildirStore near
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel ch
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    c = IMAPClient("127.0.0.1", port=mail_server.port, ssl=False, timeout=10)
    c.login("alice", "wonderland")
    c.append("INBOX", msg(1, "one"), flags=[b"\\Flagged"])
    c.append("INBOX", msg(2, "two"))
    c.append("INBOX", msg(3, "three"))

    run_mbsync(conf)
    local = near_messages(near)
    assert set(local) == {"one 1", "two 2", "three 3"}
    assert "F" in local["one 1"]

    # near side: new mail, a flag, a deletion
    files = {s: f for sub in ("cur", "new") for f in (near / "INBOX" / sub).iterdir()
             for s in [f.read_bytes().split(b"Subject: ")[1].splitlines()[0].decode()]}
    two = files["two 2"]
    two.rename(two.parent.parent / "cur" / (two.name.split(":2,")[0] + ":2,S"))
    files["three 3"].unlink()
    (near / "INBOX" / "new" / "1700000000.local.host").write_bytes(msg(4, "four"))
    run_mbsync(conf)
    remote = server_messages(c)
    assert set(remote) == {"one 1", "two 2", "four 4"}
    assert b"\\Seen" in remote["two 2"] and b"\\Flagged" in remote["one 1"]

    # server side: new mail, a flag, a deletion
    uids = {s: u for u, v in c.fetch(c.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()
            for s in [v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()]}
    c.add_flags([uids["four 4"]], [b"\\Answered"])
    c.add_flags([uids["one 1"]], [b"\\Deleted"])
    c.expunge()
    c.append("INBOX", msg(5, "five"))
    run_mbsync(conf)
    local = near_messages(near)
    assert set(local) == {"two 2", "four 4", "five 5"}
    assert "R" in local["four 4"] and "S" in local["two 2"]

    # a second run with no changes changes nothing
    run_mbsync(conf)
    assert near_messages(near) == local
    assert set(server_messages(c)) == {"two 2", "four 4", "five 5"}
    c.logout()
