"""Open INBOX and fetch FLAGS+ENVELOPE of every message, cold (no index) and warm.

Run: ``.venv/bin/python tests/maildir/bench_open_fetch.py [N]`` (default 10000).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dovetail.storage import open_storage


def make(root: Path, n: int) -> None:
    (root / "new").mkdir(parents=True)
    for d in ("cur", "tmp"):
        (root / d).mkdir()
    for i in range(n):
        body = (
            f"From: Sender {i} <s{i}@example.org>\nTo: rcpt@example.com\nSubject: message {i}\n"
            f"Message-ID: <{i}@example.org>\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
            "Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
            + "hello world\n" * 20
            + "--b\nContent-Type: text/html\n\n<p>hello</p>\n--b--\n"
        ).encode()
        (root / "new" / f"{1700000000 + i}.M{i}P1Q{i}.bench,S={len(body)}").write_bytes(body)


def run(root: Path, raw: bool = False) -> float:
    start = time.perf_counter()
    box = open_storage(root).select("INBOX")
    infos = box.fetch_info(box.uids, bodystructure=False, raw=raw)
    assert len(infos) == len(box.uids)
    box.close()
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    base = Path(tempfile.mkdtemp(prefix="dovetail-storage-bench-"))
    try:
        root = base / "Maildir"
        make(root, n)
        cold = run(root)
        warm = run(root)
        os.unlink(root / "dovetail-index.sqlite")
        rebuild = run(root)
        warm2 = run(root)
        warm_raw = run(root, raw=True)
        print(f"{n} messages: cold {cold:.2f}s (first sight: new->cur, uidlist, parse)")
        print(f"  warm {warm:.3f}s / {warm2:.3f}s (envelopes as lists), {warm_raw:.3f}s (raw IMAP bytes)")
        print(f"  index deleted and rebuilt from the uidlist: {rebuild:.2f}s")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
