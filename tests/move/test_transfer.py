"""A tree of Maildirs exported and imported elsewhere is the same mailbox to the storage API: UIDVALIDITY,
UIDs, UIDNEXT, HIGHESTMODSEQ, flags, keywords, internal dates and bytes; a second pass sends only what
changed and mirrors expunges."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dovetail.storage import open_storage
from dovetail.storage.api import DELETED, FLAGGED, SEEN, StoreMode
from dovetail.storage.transfer import MANIFEST, TransferError, export_tree, import_tree, tree_files


def message(n: int) -> bytes:
    return f"From: a@example.org\r\nTo: bob@acme.example\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def snapshot(root: Path) -> dict:
    """What an IMAP client sees of every mailbox of one Maildir++ root."""
    st = open_storage(root, create=False)
    seen = {}
    for info in st.list_mailboxes():
        if "\\Noselect" in info.attributes:
            continue
        with st.select(info.name, readonly=True) as box:
            msgs = {uid: (sorted(box.fetch_info([uid])[0].flags), box.open_message(uid),
                          box.fetch_info([uid])[0].internal_date) for uid in box.uids}
            seen[info.name] = (box.uidvalidity, box.uidnext, box.highestmodseq, msgs)
    return seen


def copy(src: Path, dst: Path, *, existing: bool = False) -> int:
    """One transfer pass; returns how many files travelled."""
    have = tree_files(dst) if existing else None
    stream = io.BytesIO(b"".join(export_tree(src, have)))
    counted: list[int] = []
    import_tree(stream, dst, after_file=counted.append)
    return len(counted)


@pytest.fixture
def tenant(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "acme"
    bob = open_storage(root / "acme.example" / "bob")
    for n in range(6):
        bob.deliver([message(n)])
    bob.create("Archive")
    bob.deliver([message(99)], mailbox="Archive", flags=[SEEN])
    with bob.select("INBOX") as box:
        uids = list(box.uids)
        box.store_flags(uids[:2], StoreMode.ADD, [SEEN, "$Forwarded"])
        box.store_flags(uids[2:3], StoreMode.ADD, [FLAGGED, "Project-X"])
        box.store_flags(uids[3:4], StoreMode.ADD, [DELETED])
        box.expunge()
    open_storage(root / "acme.example" / "carol").create("Empty")
    return root


def test_an_imported_tree_is_the_same_mailbox_to_a_client(tenant: Path, tmp_path: Path) -> None:
    before = snapshot(tenant / "acme.example" / "bob")
    dest = tmp_path / "dst" / "acme"
    copy(tenant, dest)
    after = snapshot(dest / "acme.example" / "bob")
    assert after == before
    inbox = after["INBOX"]
    assert len(inbox[3]) == 5 and inbox[1] == 7  # one expunged; UIDNEXT past the Archive-less INBOX's last
    flags = [f for f, _, _ in inbox[3].values()]
    assert ["$Forwarded", "\\Seen"] in flags and ["Project-X", "\\Flagged"] in flags
    assert (dest / "acme.example" / "bob" / "dovecot-keywords").read_bytes() == \
        (tenant / "acme.example" / "bob" / "dovecot-keywords").read_bytes()
    assert "Empty" in snapshot(dest / "acme.example" / "carol")  # an empty folder travels too
    assert (dest / "acme.example" / "bob" / "tmp").is_dir()


def test_a_second_pass_sends_only_what_changed_and_mirrors_expunges(tenant: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dst" / "acme"
    copy(tenant, dest)
    bob = open_storage(tenant / "acme.example" / "bob")
    bob.deliver([message(7)])
    with bob.select("INBOX") as box:
        first = box.uids[0]
        box.store_flags([first], StoreMode.ADD, [DELETED])
        box.expunge()
        box.store_flags([box.uids[-2]], StoreMode.ADD, ["Later"])
    metadata = sum(1 for rel in tree_files(tenant) if "/cur/" not in rel and "/new/" not in rel)
    sent = copy(tenant, dest, existing=True)
    assert sent == metadata + 2  # the new message and the one renamed by its new flag; the rest stayed
    assert snapshot(dest / "acme.example" / "bob") == snapshot(tenant / "acme.example" / "bob")
    assert set(tree_files(dest)) == set(tree_files(tenant))


def test_a_killed_import_leaves_whole_files_and_the_next_one_completes(tenant: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dst" / "acme"
    data = b"".join(export_tree(tenant))

    class Killed(Exception):
        pass

    def stop(n: int) -> None:
        if n == 3:
            raise Killed

    with pytest.raises(Killed):
        import_tree(io.BytesIO(data), dest, after_file=stop)
    (dest / "acme.example" / "bob" / "cur" / "half.part").write_bytes(b"torn")
    copy(tenant, dest, existing=True)
    assert snapshot(dest / "acme.example" / "bob") == snapshot(tenant / "acme.example" / "bob")
    assert not list(dest.rglob("*.part"))


def test_a_stream_naming_a_path_outside_the_tree_is_refused(tmp_path: Path) -> None:
    import json
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        body = json.dumps({"files": {}, "dirs": [], "send": 1, "bytes": 1}).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(TransferError):
        import_tree(buf, tmp_path / "dst")
    assert not (tmp_path / "escape").exists()
    with pytest.raises(TransferError):
        import_tree(io.BytesIO(b"not a tar at all" * 64), tmp_path / "dst2")
