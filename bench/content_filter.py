"""MX intake with the content filter off, with rspamd over HTTP (/checkv2) and with rspamd's milter proxy.

An in-process MX (real SMTP on loopback, the real queue and directory) receives ``--messages`` 2 KB
messages over ``--sessions`` parallel SMTP sessions, each a fresh connection per message; a private
rspamd (``tests/rspamd_server.py``, started here) does the filtering. Reports messages per second and
the median and 95th percentile time from DATA's end to the reply. Run from the repository root:

    .venv/bin/python bench/content_filter.py --messages 400 --sessions 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.dnsserver import LoopbackDNS  # noqa: E402
from tests.intake.mxstack import OUR_ID, make_mx  # noqa: E402
from tests.rspamd_server import RspamdServer  # noqa: E402

from dovetail.intake.contentfilter import ContentFilter  # noqa: E402
from dovetail.intake.milter import parse_milter  # noqa: E402
from dovetail.intake.milter.client import Timeouts  # noqa: E402
from dovetail.intake.mx import MxBackend  # noqa: E402
from dovetail.intake.rspamd import RspamdClient  # noqa: E402
from dovetail.smtp.server import SmtpServer  # noqa: E402

BODY = ("Hello Bob,\r\n\r\nthe figures for the third quarter are attached below; see you on Monday.\r\n" * 24)


def _message(n: int) -> bytes:
    return (f"From: Alice <alice@sender.test>\r\nTo: bob@acme.example\r\nSubject: Figures {n}\r\n"
            f"Message-ID: <b{n}@sender.test>\r\nDate: Sun, 06 Dec 2026 18:00:00 +0000\r\n\r\n{BODY}").encode()


async def _run(root: Path, content: ContentFilter | None, messages: int, sessions: int) -> tuple[float, list[float]]:
    mx = make_mx(root)
    server = SmtpServer(MxBackend(mx.resolver, mx.queue, content=content), hostname=OUR_ID)
    await server.start(host="127.0.0.1", port=0)
    latencies: list[float] = []
    todo = list(range(messages))

    async def session() -> None:
        while todo:
            n = todo.pop()
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=60)
            await client.connect()
            await client.mail("alice@sender.test")
            await client.rcpt("bob@acme.example")
            started = time.perf_counter()
            reply = await client.data(_message(n))
            latencies.append(time.perf_counter() - started)
            assert reply.code == 250, reply
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    elapsed = time.perf_counter() - started
    await server.stop(1)
    return messages / elapsed, latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dovetail-bench-cf-") as tmp, LoopbackDNS() as dns:
        base = Path(tmp)
        with RspamdServer(base / "rspamd", dns.port) as rspamd:
            modes = {
                "off": lambda: None,
                "rspamd HTTP": lambda: ContentFilter(OUR_ID, OUR_ID, rspamd=RspamdClient(rspamd.url, 30)),
                "rspamd milter": lambda: ContentFilter(OUR_ID, OUR_ID, milters=[parse_milter(rspamd.milter)],
                                                       timeouts=Timeouts(10, 30, 60)),
            }
            results: dict[str, list[tuple[float, list[float]]]] = {m: [] for m in modes}
            for rnd in range(args.rounds):
                for name, make in modes.items():
                    root = base / f"{name.replace(' ', '-')}-{rnd}"
                    root.mkdir()
                    results[name].append(asyncio.run(_run(root, make(), args.messages, args.sessions)))
    print(f"{args.messages} messages of {len(_message(0))} bytes, {args.sessions} sessions, "
          f"best of {args.rounds} round(s)\n")
    print("| content filter | msg/s | vs off | median ms | p95 ms |")
    print("|---|---|---|---|---|")
    best_off = max(r for r, _ in results["off"])
    for name, runs in results.items():
        rate, lat = max(runs, key=lambda r: r[0])
        lat_ms = sorted(x * 1000 for x in lat)
        p95 = lat_ms[int(0.95 * (len(lat_ms) - 1))]
        print(f"| {name} | {rate:.0f} | {rate / best_off:.2f}x | {statistics.median(lat_ms):.1f} | {p95:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
