"""Run as a subprocess by the crash tests: commit messages forever, print each qid once committed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from dovetail.queue import Envelope, Queue, QueueRecipient

CHUNK = b"0123456789abcdef" * 4096  # 64 KB


def produce(queue: Queue, lock: threading.Lock) -> None:
    while True:
        writer = queue.open_incoming(Envelope("alice@example.org", [QueueRecipient("bob@example.com")]))
        writer.write(f"Subject: {writer.queue_id}\r\n\r\n".encode())
        for _ in range(3):
            writer.write(CHUNK)
        qid = writer.commit()
        with lock:
            sys.stdout.write(qid + "\n")
            sys.stdout.flush()


def main() -> None:
    queue = Queue(Path(sys.argv[1]), group_commit=sys.argv[2] == "group")
    lock = threading.Lock()
    threads = [threading.Thread(target=produce, args=(queue, lock), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
