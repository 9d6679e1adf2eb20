#!/usr/bin/env python3
"""IMAP through the login proxy against IMAP straight to the home node: what the extra hop costs.

Two IMAP servers share one directory (SQLite) and node list, each in its own process: ``home`` on
127.0.0.3, which holds bob's Maildir, and ``front`` on 127.0.0.2, which proxies bob's logins to ``home``
(:mod:`dovetail.imap.proxy`). The same closed-loop load (N clients, no think time, each logged in once,
then SELECT INBOX and a mix of what a mail client sends: ``NOOP``, ``UID FETCH 1:* (FLAGS)`` over the
mailbox, ``UID FETCH n BODY.PEEK[]`` of one message, ``UID STORE +FLAGS/-FLAGS``, ``SEARCH UNSEEN``) runs
against ``home`` directly and through ``front``, alternating, a few rounds each. Printed: commands/s of
each run, the best of each side and the ratio proxied/direct (the goal: at least 0.90), and the CPU
seconds each server process used per 1,000 commands.

Each node runs as an ``imapd`` worker does (``master/worker.py``, ``master/runners.py``): on uvloop, with one
storage thread as the loop's default executor. ``--stdlib-loop`` runs them on asyncio's own loop and
default thread pool instead, as this bench did before: there the pool's threads hand the GIL to each other
(futex calls) and the home node's CPU per command grows with how often its loop falls asleep, which the
extra hop makes more frequent (twice the context switches per command when proxied, with the same reads,
bytes and storage calls per command), so the proxied runs showed up to ~10 % more home CPU per command
than the direct ones, a cost the nodes as they run in production do not have.

The load generator is a minimal asyncio IMAP client (tagged commands, literals in responses), as in
``imap_load.py``; imaptest would measure the same hop but needs a build of its own.

    .venv/bin/python bench/imap_proxy.py --clients 8 --seconds 10 --rounds 3 --messages 300
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dovetail.db import make_engine, migrate  # noqa: E402
from dovetail.directory import Directory  # noqa: E402
from dovetail.directory.nodes import NodeStore  # noqa: E402
from dovetail.imap.limits import Limits  # noqa: E402
from dovetail.imap.server import ImapServer  # noqa: E402
from dovetail.mailauth.homes import LoginHomes  # noqa: E402
from dovetail.mailauth.login import DirectoryAuthenticator  # noqa: E402

SECRET = "bench-secret-between-the-two-nodes"
USER, PASSWORD = "bob@acme.example", "benchpw"


def _listen(host: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(512)
    return sock


def _serve(root: Path, name: str, sock: socket.socket, ready: multiprocessing.synchronize.Event,
           stdlib_loop: bool) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the servers' log lines (one per login and logout) would drown the figures
    os.dup2(devnull, 1)

    async def main() -> None:
        if not stdlib_loop:  # as the imapd runner does: the sessions' storage calls queue for one thread
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        engine = make_engine(f"sqlite:///{root / 'dovetail.db'}")
        auth = DirectoryAuthenticator(Directory(engine), root / name / "mail")
        limits = Limits(max_connections_per_user=1000, max_connections_per_ip=1000)
        server = ImapServer(auth, limits=limits, homes=LoginHomes(NodeStore(engine), name, SECRET))
        await server.start(sock=sock)
        ready.set()
        await asyncio.Event().wait()

    if not stdlib_loop:
        uvloop.install()
    asyncio.run(main())


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def cmd(self, text: str | bytes) -> bytes:
        self.n += 1
        tag = b"t%d" % self.n
        data = text.encode() if isinstance(text, str) else text
        self.writer.write(tag + b" " + data + b"\r\n")
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                await self.reader.readexactly(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return line


async def _connect(port: int, host: str, source: str) -> Client:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0), limit=1 << 22)
    await reader.readline()
    c = Client(reader, writer)
    await c.cmd(f'LOGIN "{USER}" "{PASSWORD}"')
    return c


async def _fill(port: int, messages: int) -> None:
    c = await _connect(port, "127.0.0.3", "127.0.0.3")
    rnd = random.Random(1)
    for i in range(messages):
        body = ("Lorem ipsum dolor sit amet. " * rnd.randint(5, 150)).encode()
        msg = (b"From: a%d@ext.example\r\nTo: bob@acme.example\r\nSubject: message %d\r\nMessage-ID: <m%d@ext>\r\n\r\n"
               % (i, i, i)) + body + b"\r\n"
        await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    await c.cmd("LOGOUT")


async def _load(host: str, port: int, clients: int, seconds: float, messages: int) -> int:
    conns = [await _connect(port, host, f"127.0.1.{i + 1}") for i in range(clients)]
    for c in conns:
        await c.cmd("SELECT INBOX")
    done = 0
    stop = time.monotonic() + seconds

    async def run(c: Client, seed: int) -> None:
        nonlocal done
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            uid = rnd.randint(1, messages)
            choice = rnd.random()
            if choice < 0.3:
                await c.cmd("NOOP")
            elif choice < 0.45:
                await c.cmd("UID FETCH 1:* (FLAGS)")
            elif choice < 0.75:
                await c.cmd(f"UID FETCH {uid} BODY.PEEK[]")
            elif choice < 0.9:
                await c.cmd(f"UID STORE {uid} {'+' if rnd.random() < 0.5 else '-'}FLAGS (\\Seen)")
            else:
                await c.cmd("SEARCH UNSEEN")
            done += 1

    await asyncio.gather(*(run(c, i) for i, c in enumerate(conns)))
    for c in conns:
        c.writer.close()
    return done


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--stdlib-loop", action="store_true",
                    help="run the nodes on asyncio's own loop and thread pool instead of as imapd workers run")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dovetail-proxy-bench-"))
    engine = make_engine(f"sqlite:///{root / 'dovetail.db'}")
    migrate(engine)
    socks = {"front": _listen("127.0.0.2"), "home": _listen("127.0.0.3")}
    ports = {name: s.getsockname()[1] for name, s in socks.items()}
    store = NodeStore(engine)
    store.add("front", "mx", imap=f"127.0.0.2:{ports['front']}")
    store.add("home", "mailbox", lmtp="127.0.0.3:24", imap=f"127.0.0.3:{ports['home']}")
    directory = Directory(engine)
    directory.tenant_add("acme", node="home")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add(USER, "{PLAIN}" + PASSWORD)
    engine.dispose()
    ctx = multiprocessing.get_context("fork")
    procs = {}
    for name, sock in socks.items():
        ready = ctx.Event()
        proc = ctx.Process(target=_serve, args=(root, name, sock, ready, args.stdlib_loop), daemon=True)
        proc.start()
        if not ready.wait(30):
            raise SystemExit(f"{name} did not start")
        procs[name] = proc
    try:
        asyncio.run(_fill(ports["home"], args.messages))
        asyncio.run(_load("127.0.0.3", ports["home"], args.clients, 2.0, args.messages))  # warm-up: first SELECT
        results: dict[str, list[float]] = {"direct": [], "proxied": []}
        cpu: dict[str, list[float]] = {"direct": [], "proxied": []}
        for _ in range(args.rounds):
            for kind, host, port in (("direct", "127.0.0.3", ports["home"]), ("proxied", "127.0.0.2", ports["front"])):
                before = {n: _cpu(p.pid) for n, p in procs.items()}  # type: ignore[arg-type]
                t0 = time.monotonic()
                n = asyncio.run(_load(host, port, args.clients, args.seconds, args.messages))
                rate = n / (time.monotonic() - t0)
                used = {k: _cpu(p.pid) - before[k] for k, p in procs.items()}  # type: ignore[arg-type]
                results[kind].append(rate)
                cpu[kind].append(1000 * sum(used.values()) / n)
                print(f"{kind:8} {rate:8.0f} commands/s  server CPU {1000 * used['home'] / n:.2f} s (home) + "
                      f"{1000 * used['front'] / n:.2f} s (front) per 1000 commands", flush=True)
        best = {k: max(v) for k, v in results.items()}
        print(f"best: direct {best['direct']:.0f}/s, proxied {best['proxied']:.0f}/s, "
              f"ratio proxied/direct {best['proxied'] / best['direct']:.2f}")
        return 0
    finally:
        for proc in procs.values():
            proc.kill()
            proc.join(5)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
