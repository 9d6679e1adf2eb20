"""Replies latency: time from the MX's SMTP ``250`` to the signed webhook arriving, at a steady rate.

    /work/venv-sys/bin/python bench/replies_latency.py --via master [--rate 100] [--seconds 10]
    .venv/bin/python bench/replies_latency.py --via stack [--rate 100] [--seconds 10] [--connections 4]

``--via master`` (the deployment path): a real ``dovetail serve`` master; the reply inbox is a local
mailbox, so the queue manager hands each delivered reply to the pipeline, and the replies service's
dispatcher posts the webhook. As root its workers drop privileges, so run it with a system-wide Python.
``--via stack``: one process runs the MX, queue manager, delivery, IMAP server and the replies engine
following the inbox over IMAP with IDLE (tests/replies/stack.py), which measures the IMAP source.
A local HTTP receiver verifies each signed webhook. Replies are sent over persistent SMTP connections
at the given rate; the latency of each reply is taken from the moment smtplib's ``sendmail`` returned
(the ``250`` to DATA) to the moment the receiver verified its webhook. The report also gives the p50
of the first and of the last tenth of the replies: a last tenth well above the first means a backlog
that grew while the load lasted; and the rate actually offered, which the MX's intake may hold below
``--rate``. ``--via master`` also gives the CPU time of the smtpd workers and of the replies service
per reply (``/proc/<pid>/stat``, while the load lasted and drained).
"""

from __future__ import annotations

import argparse
import logging
import os
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
    ap.add_argument("--connections", type=int, default=32,
                    help="parallel SMTP connections (the MX answers 250 after the replies hand-over, so a few "
                         "connections cannot offer more than ~100/s)")
    ap.add_argument("--via", choices=("master", "stack"), default="master")
    ap.add_argument("--smtpd-workers", type=int, default=0,
                    help="--via master: smtpd worker processes ([services.smtpd] workers; 0: the default)")
    args = ap.parse_args()
    configure("warning")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.via == "master":
        return via_master(args)

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
    sender = paced_sender(stack.smtp_port, INBOX, total, args, accepted)
    sent_for = send_all(sender, args.connections)
    receiver.wait_for(total, timeout=max(60.0, args.seconds * 3))
    stack.stop()
    receiver.stop()
    return report(receiver, accepted, total, sent_for, args)


def send_all(sender, connections: int) -> float:  # noqa: ANN001
    t0 = time.monotonic()
    senders = [threading.Thread(target=sender, args=(k,)) for k in range(connections)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    return time.monotonic() - t0


def paced_sender(port: int, inbox: str, total: int, args: argparse.Namespace, accepted: dict[str, float]):  # noqa: ANN201
    interval = args.connections / args.rate

    def sender(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            start = time.monotonic()
            for i, n in enumerate(range(k, total, args.connections)):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the offered load, not synchronisation
                mid = f"bench{n}@client.example"
                smtp.sendmail("anna@client.example", [inbox],
                              reply(to=inbox, in_reply_to="<bench@acme.example>", message_id=f"<{mid}>"))
                accepted[mid] = time.monotonic()

    return sender


def via_master(args: argparse.Namespace) -> int:
    import json

    from tests.master.harness import Master, cli

    m = Master.create(Path(tempfile.mkdtemp(prefix="dovetail-bench-replies-")))
    if args.smtpd_workers:
        with open(m.data_dir / "dovetail.toml", "a") as fh:
            fh.write(f"\n[services.smtpd]\nworkers = {args.smtpd_workers}\n")
    inbox = "bob@acme.example"
    for argv in (["config", "set", "replies.webhook_allow_private=true"],  # the receiver is on loopback
                 ["campaigns", "add", "--tenant", "acme", "bench"],
                 ["campaigns", "register", "--tenant", "acme", "bench", "--message-id", "<bench@acme.example>",
                  "--recipient", "anna@client.example", "--subject", "Quick question"],
                 ["replies", "inbox", "add", "--tenant", "acme", inbox]):
        out = cli(m.data_dir, *argv)
        if out.returncode:
            print(out.stderr)
            return 1
    receiver = Receiver().start()
    receiver.secret = json.loads(cli(m.data_dir, "webhooks", "add", "--tenant", "acme", receiver.url,
                                     "--json").stdout)["secret"]
    accepted: dict[str, float] = {}
    total = int(args.rate * args.seconds)
    cpu: dict[str, float] = {}
    try:
        m.start()
        before = {service: _cpu_ticks(m.worker_pids(service)) for service in ("smtpd", "replies")}
        print("worker pids (for a profiler): " + "; ".join(f"{service} {' '.join(map(str, ticks))}"
                                                            for service, ticks in before.items()), flush=True)
        sent_for = send_all(paced_sender(m.smtp_port, inbox, total, args, accepted), args.connections)
        receiver.wait_for(total, timeout=max(60.0, args.seconds * 3))
        for service, ticks in before.items():
            after = _cpu_ticks(list(ticks))
            cpu[service] = sum(after[pid] - ticks[pid] for pid in ticks if pid in after) / os.sysconf("SC_CLK_TCK")
    finally:
        m.stop()
        m.cleanup()
        receiver.stop()
    status = report(receiver, accepted, total, sent_for, args)
    print("CPU per reply: " + ", ".join(f"{service} {1000 * seconds / total:.2f} ms"
                                        for service, seconds in cpu.items()))
    return status


def _cpu_ticks(pids: list[int]) -> dict[int, int]:
    """User+system clock ticks of each live process (its threads included)."""
    out = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        out[pid] = int(fields[11]) + int(fields[12])
    return out


def report(receiver: Receiver, accepted: dict[str, float], total: int, sent_for: float,
           args: argparse.Namespace) -> int:
    arrived = {p["data"]["reply"]["message_id"]: t for p, t in zip(receiver.received, receiver.arrival, strict=True)}
    lat = sorted(arrived[m] - accepted[m] for m in accepted if m in arrived)
    lost = total - len(lat)
    if not lat:
        print("no webhook arrived")
        return 1
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    in_order = [arrived[m] - accepted[m] for m in sorted(accepted, key=accepted.__getitem__) if m in arrived]
    tenth = max(1, len(in_order) // 10)
    first, last = statistics.median(in_order[:tenth]), statistics.median(in_order[-tenth:])
    print(f"replies latency (via {args.via}): {len(lat)} of {total} replies at {total / sent_for:.0f}/s offered "
          f"({args.connections} SMTP connections): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms, missing {lost}; p50 of the first tenth {first * 1000:.0f} ms, "
          f"of the last tenth {last * 1000:.0f} ms")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
