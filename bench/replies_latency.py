"""Replies latency: time from the MX's SMTP ``250`` to the signed webhook arriving, at a steady rate.

    .venv/bin/python bench/replies_latency.py [--rate 100] [--seconds 10] [--connections 4]

One process runs Dovetail's MX, queue manager, Maildir delivery, IMAP server and the replies
engine (following the reply inbox over IMAP with IDLE) on SQLite, exactly as tests/replies/stack.py
wires them; a local HTTP receiver verifies each signed webhook. Replies are sent over persistent
SMTP connections at the given rate; the latency of each reply is taken from the moment smtplib's
``sendmail`` returned (the ``250`` to DATA) to the moment the receiver verified its webhook.
"""

from __future__ import annotations

import argparse
import logging
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.replies.mails import reply  # noqa: E402
from tests.replies.receiver import Receiver  # noqa: E402
from tests.replies.stack import INBOX, Stack  # noqa: E402

from dovetail.db import make_engine, migrate  # noqa: E402
from dovetail.directory import Directory  # noqa: E402
from dovetail.log import configure  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="replies per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    ap.add_argument("--connections", type=int, default=4, help="parallel SMTP connections")
    args = ap.parse_args()
    configure("warning")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="dovetail-bench-replies-"))
    engine = make_engine(f"sqlite:///{root / 'dovetail.db'}")
    migrate(engine)
    Directory(engine).tenant_add("acme")
    stack = Stack(root, engine)
    receiver = Receiver().start()
    accepted: dict[str, float] = {}
    stack.service.registry.register_outbound("acme", "bench", message_id="<bench@acme.example>",
                                             recipient="anna@client.example", subject="Quick question")
    receiver.secret = stack.service.outbox.add_endpoint("acme", receiver.url)["secret"]
    stack.start()
    total = int(args.rate * args.seconds)
    interval = args.connections / args.rate

    def sender(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30) as smtp:
            start = time.monotonic()
            for i, n in enumerate(range(k, total, args.connections)):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the offered load, not synchronisation
                mid = f"bench{n}@client.example"
                smtp.sendmail("anna@client.example", [INBOX],
                              reply(to=INBOX, in_reply_to="<bench@acme.example>", message_id=f"<{mid}>"))
                accepted[mid] = time.monotonic()

    t0 = time.monotonic()
    senders = [threading.Thread(target=sender, args=(k,)) for k in range(args.connections)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    sent_for = time.monotonic() - t0
    receiver.wait_for(total, timeout=max(60.0, args.seconds * 3))
    stack.stop()
    receiver.stop()
    arrived = {p["data"]["reply"]["message_id"]: t for p, t in zip(receiver.received, receiver.arrival, strict=True)}
    lat = sorted(arrived[m] - accepted[m] for m in accepted if m in arrived)
    lost = total - len(lat)
    if not lat:
        print("no webhook arrived")
        return 1
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"replies latency: {len(lat)} of {total} replies at {total / sent_for:.0f}/s offered "
          f"({args.connections} SMTP connections): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms, missing {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
