"""The shared directory fsync: every caller returns only after an fsync that began after its call, and
callers that arrive while one runs share the next one instead of queueing one each."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dovetail.maildir import dirsync
from dovetail.maildir.deliver import write_message


class GatedFsync:
    """The real directory fsync, held at its start until the test lets it go; records the order of events."""

    def __init__(self) -> None:
        self.real = dirsync._fsync_dir
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.entered = threading.Semaphore(0)
        self.gates: list[threading.Event] = []
        self.fail_next = False

    def __call__(self, path: str) -> None:
        gate = threading.Event()
        with self.lock:
            n = len(self.gates)
            self.gates.append(gate)
            self.events.append(f"start{n}")
        self.entered.release()
        gate.wait()
        with self.lock:
            if self.fail_next:
                self.fail_next = False
                self.events.append(f"fail{n}")
                raise OSError(5, "Input/output error")
        self.real(path)
        with self.lock:
            self.events.append(f"end{n}")

    def release(self, n: int) -> None:
        self.gates[n].set()


def _caller(path: Path, name: str, fsync: GatedFsync, errors: dict[str, BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            dirsync.sync_directory(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors[name] = exc
        with fsync.lock:
            fsync.events.append(f"return-{name}")

    return threading.Thread(target=run, name=name)


def _waiting(n: int) -> None:
    """Until n threads wait for the running fsync of the (one) folder to end."""
    folder = next(iter(dirsync._folders.values()))
    while True:
        with folder.cond:
            if folder.waiting >= n:
                return
        threading.Event().wait(0.001)


def test_callers_during_an_fsync_share_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsync = GatedFsync()
    monkeypatch.setattr(dirsync, "_fsync_dir", fsync)
    errors: dict[str, BaseException] = {}
    first = _caller(tmp_path, "a", fsync, errors)
    first.start()
    fsync.entered.acquire()  # a's fsync has started: entries made from now on are not covered by it
    late = [_caller(tmp_path, name, fsync, errors) for name in ("b", "c", "d")]
    for t in late:
        t.start()
    _waiting(3)
    fsync.release(0)
    first.join()
    fsync.entered.acquire()  # one fsync for b, c and d
    fsync.release(1)
    for t in late:
        t.join()
    assert not errors
    assert [e for e in fsync.events if e.startswith("start")] == ["start0", "start1"]
    # nobody who called after fsync 0 began returned before fsync 1 ended
    assert fsync.events.index("end1") < min(fsync.events.index(f"return-{n}") for n in "bcd")
    assert fsync.events.index("end0") < fsync.events.index("return-a")
    assert dirsync._folders == {}


def test_a_failed_fsync_fails_its_caller_and_the_waiters_run_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsync = GatedFsync()
    monkeypatch.setattr(dirsync, "_fsync_dir", fsync)
    errors: dict[str, BaseException] = {}
    first = _caller(tmp_path, "a", fsync, errors)
    first.start()
    fsync.entered.acquire()
    second = _caller(tmp_path, "b", fsync, errors)
    second.start()
    _waiting(1)
    fsync.fail_next = True
    fsync.release(0)
    first.join()
    fsync.entered.acquire()  # b runs its own fsync
    fsync.release(1)
    second.join()
    assert isinstance(errors.get("a"), OSError)
    assert "b" not in errors
    assert fsync.events.index("end1") < fsync.events.index("return-b")


def test_concurrent_deliveries_into_one_maildir_are_all_there(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    barrier = threading.Barrier(16)
    paths: list[Path] = []

    def deliver(i: int) -> None:
        barrier.wait()
        for j in range(5):
            paths.append(write_message(maildir, [f"Subject: {i}.{j}\n\nbody\n".encode()]))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(16)]
    before = dirsync.fsyncs
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in (maildir / "new").iterdir()) == sorted(p.name for p in paths)
    assert len(paths) == 80
    assert 1 <= dirsync.fsyncs - before <= 80
    assert not list((maildir / "tmp").iterdir())


def test_copies_delivered_together_are_all_linked_before_their_folders_are_synced(tmp_path: Path) -> None:
    boxes = [tmp_path / f"box{i}" for i in range(3)]
    before = dirsync.fsyncs
    with dirsync.syncs_together():
        paths = [write_message(box, [b"Subject: x\n\nbody\n"]) for box in (*boxes, boxes[0])]
        assert all(p.exists() for p in paths)  # each copy written and named...
        assert dirsync.fsyncs == before  # ...and no folder synced yet: the block has not ended
    assert dirsync.fsyncs == before + 3  # one sync per folder (box0 took two copies), all before the block returned


def test_a_failed_folder_sync_at_the_end_of_the_block_raises_after_syncing_the_others(tmp_path: Path) -> None:
    box = tmp_path / "box"
    before = dirsync.fsyncs
    with pytest.raises(FileNotFoundError), dirsync.syncs_together():
        write_message(box, [b"Subject: x\n\nbody\n"])
        dirsync.sync_directory(tmp_path / "gone")  # cannot be opened at the end: the block must not succeed
    assert dirsync.fsyncs == before + 1  # box/new was still synced


def test_a_block_that_raises_syncs_nothing_and_reports_nothing(tmp_path: Path) -> None:
    before = dirsync.fsyncs
    with pytest.raises(RuntimeError), dirsync.syncs_together():
        write_message(tmp_path / "box", [b"Subject: x\n\nbody\n"])
        raise RuntimeError("delivery failed")
    assert dirsync.fsyncs == before
    write_message(tmp_path / "box", [b"Subject: y\n\nbody\n"])  # after the block: synced at once again
    assert dirsync.fsyncs == before + 1
