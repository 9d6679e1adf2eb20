"""How a delivered file comes to be: unnamed (O_TMPFILE) and linked into new/, or the classic tmp/ name.

Both ways give the same Maildir to readers (Dovecot reads only the final name and bytes); the first
leaves nothing behind when the writer dies mid-message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dovetail.maildir import deliver
from dovetail.maildir.deliver import delivery_name, tmpfile_supported, write_message
from dovetail.storage.api import DeliveryId

BODY = [b"Return-Path: <a@example.org>\n", b"Subject: x\n\n", b"line\n" * 3]


def _check_copy(path: Path, box: Path) -> None:
    data = path.read_bytes()
    assert data == b"".join(BODY)
    assert path.parent == box / "new"
    lines = data.count(b"\n")
    assert path.name.endswith(f",S={len(data)},W={len(data) + lines}")
    assert os.listdir(box / "tmp") == []
    assert os.stat(path).st_nlink == 1  # its one name: nothing left in tmp/


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")
def test_unnamed_file_gets_its_one_name_in_new(tmp_path: Path) -> None:
    box = tmp_path / "box"
    assert tmpfile_supported(str(box / "tmp"))  # ext4 and tmpfs take it
    path = write_message(box, BODY, delivery_name(DeliveryId("QID1", 0, 1700000000.0)))
    _check_copy(path, box)


def test_filesystem_refusing_tmpfile_is_remembered_and_not_an_error() -> None:
    # sysfs refuses O_TMPFILE (EOPNOTSUPP), as vfat or an old NFS would: the writer falls back, no error
    assert deliver._open_unnamed("/sys") is None
    assert not tmpfile_supported("/sys")


def test_classic_tmp_name_where_tmpfile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = tmp_path / "box"
    monkeypatch.setattr(deliver, "_tmpfile_refused", {f"{box}/tmp"})  # what a refusal leaves behind
    seen: list[str] = []

    def chunks():  # noqa: ANN202 - the named tmp/ file exists while the message is written
        yield BODY[0]
        seen.extend(os.listdir(box / "tmp"))
        yield from BODY[1:]

    path = write_message(box, chunks(), delivery_name(DeliveryId("QID2", 0, 1700000000.0)))
    assert len(seen) == 1 and seen[0].startswith("1700000000.VQID2R0.")
    _check_copy(path, box)


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")
def test_link_through_proc_refused_copies_to_a_named_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = tmp_path / "box"
    (box / "new").mkdir(parents=True)
    (box / "tmp").mkdir()
    fd = deliver._open_unnamed(str(box / "tmp"))
    assert fd is not None
    try:
        os.write(fd, b"".join(BODY))
        monkeypatch.setattr(deliver, "_proc_fd", (os.getpid(), -1))  # a /proc that cannot name the file
        final = box / "new" / "copy,S=1,W=1"
        deliver._link_unnamed(fd, str(box / "tmp"), final)
    finally:
        os.close(fd)
    assert final.read_bytes() == b"".join(BODY)
    assert os.listdir(box / "tmp") == []
    assert not tmpfile_supported(str(box / "tmp"))  # later deliveries there use named tmp/ files


def test_writer_killed_mid_message_leaves_nothing(tmp_path: Path) -> None:
    """kill -9 while the file is being written: no partial message in new/, and (O_TMPFILE) no stray tmp/ file."""
    box = tmp_path / "box"
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from dovetail.maildir.deliver import write_message
        def chunks():
            yield b"Subject: big\\n\\n" + b"x" * (1024 * 1024)  # past the write batch: on its way to disk
            yield b"more\\n"
            sys.stdout.write("writing\\n"); sys.stdout.flush()
            sys.stdin.read()  # held here, mid-message, until killed
            yield b"never\\n"
        write_message(Path(sys.argv[1]), chunks())
    """)
    child = subprocess.Popen([sys.executable, "-c", script, str(box)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert os.listdir(box / "new") == [] and os.listdir(box / "cur") == []
    if hasattr(os, "O_TMPFILE"):
        assert os.listdir(box / "tmp") == []
