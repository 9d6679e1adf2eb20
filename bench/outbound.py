"""Outbound benchmark: DKIM signatures/s, and messages/s queued → signed → relayed to Postfix's smtp-sink.

    .venv/bin/python bench/outbound.py [--messages 2000] [--concurrency 20]

Starts ``smtp-sink`` on a free loopback port, queues N 2 KB messages, runs the queue manager with
the outbound agent (relay transport, no TLS, connection reuse) and times until the queue is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.log import configure
from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.dkim import sign
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.transports import Transports
from dovetail.queue import Envelope, Queue, QueueConfig, QueueManager, QueueRecipient

BODY = (b"From: Alice <alice@acme.example>\r\nTo: bob@example.org\r\nSubject: bench\r\n"
        b"Message-ID: <%d@acme.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n"
        + b"x" * 72 + b"\r\n") + (b"y" * 72 + b"\r\n") * 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args()
    configure(level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="dovetail-bench-"))
    try:
        engine = make_engine(f"sqlite:///{tmp / 'db.sqlite'}")
        migrate(engine)
        d = Directory(engine)
        d.tenant_add("acme")
        d.domain_add("acme.example", "acme")
        keys = DkimKeys(engine, tmp / "dkim")
        keys.ensure("acme.example")
        signing = keys.signing_keys("acme.example")
        msg = BODY.replace(b"%d", b"1")
        for label, ks in (("RSA-2048", [k for k in signing if k.algorithm == "rsa-sha256"]),
                          ("Ed25519", [k for k in signing if k.algorithm == "ed25519-sha256"]),
                          ("RSA-2048 + Ed25519", signing)):
            n, start = 1000, time.perf_counter()
            for _ in range(n):
                sign(msg, ks)
            print(f"DKIM sign {label}: {n / (time.perf_counter() - start):.0f} messages/s")
        sink_bin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        port = free_port()
        sink = subprocess.Popen([sink_bin, "-u", "nobody", "-c", f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL)
        try:
            Transports(engine).set("default", "*", "relay", host="127.0.0.1", port=port, tls="none")
            queue = Queue(tmp / "queue")
            for i in range(args.messages):
                queue.inject(Envelope("alice@acme.example", [QueueRecipient(f"r{i}@example.org")]),
                             BODY.replace(b"%d", str(i).encode()))
            agent = OutboundAgent(Transports(engine), keys, AgentConfig(destination_concurrency=args.concurrency))

            async def run() -> float:
                manager = QueueManager(queue, lambda _a: agent,
                                       QueueConfig(max_concurrent_deliveries=args.concurrency))
                start = time.perf_counter()
                task = asyncio.create_task(manager.run())
                while manager.delivered < args.messages:  # noqa: ASYNC110 - the manager exposes a counter only
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - start
                manager.stop()
                await task
                await agent.close()
                return elapsed

            elapsed = asyncio.run(run())
            print(f"queued -> DKIM-signed -> relayed to smtp-sink: {args.messages} messages in {elapsed:.2f}s = "
                  f"{args.messages / elapsed:.0f} messages/s (connections made {agent.connections_made}, "
                  f"reused {agent.connections_reused})")
        finally:
            sink.terminate()
            sink.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
