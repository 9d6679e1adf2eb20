#!/usr/bin/env python3
"""IMAP under load: Dovetail against Dovecot on the same Maildir contents, in one run.

Two measures, both servers side by side:

1. **Throughput and latency.** N concurrent clients (closed loop, no think time) each log in, SELECT INBOX,
   sync the headers (``FETCH 1:* (UID FLAGS ENVELOPE)``), then run a weighted mix of commands a mail client
   sends: ``UID FETCH`` of a few full bodies, ``SEARCH`` (UNSEEN, FROM x, SINCE date), ``UID STORE
   +FLAGS/-FLAGS``, ``APPEND`` then later ``UID EXPUNGE`` of what it appended (so the mailbox keeps its
   size), a short ``IDLE``, and every few dozen commands a LOGOUT and a new session. Every server user's
   INBOX starts as the same corpus of generated messages (realistic sizes: mostly text, some HTML
   alternatives, a few attachments), hard-linked into both servers' Maildirs before either touches them.
   Reported: operations/s, p50/p99 latency per command kind, the ratio Dovetail/Dovecot, and the server's
   CPU time per operation.
2. **Memory per idle connection.** K clients log in, SELECT and IDLE; the summed PSS
   (``/proc/<pid>/smaps_rollup``) of every server process (Dovecot's master, auth, login and one ``imap``
   process per connection; Dovetail's master and workers) is taken before and after, divided by K; the
   server's CPU use while the K clients sit in IDLE is reported too.

The load generator is our own (asyncio, a minimal IMAP client: tagged commands, literals in responses,
synchronising literals for APPEND) because Dovecot's ``imaptest`` is not packaged in Debian and imaplib is
blocking. Connections come from many loopback source addresses (127.0.0.2, .3, ...) so that neither
server's per-IP connection limit (Dovetail's is fixed at 50) decides the figures.

Dovetail runs as ``dovetail --data-dir DIR serve --imap 127.0.0.1:PORT`` (the other listening services
off) with ``imap.max_connections_per_user`` raised; Dovecot as a private instance (``dovecot -c FILE``) with
passwd-file users (PLAIN scheme), mail served as a non-root uid and its process and connection limits
raised for the idle test. Run as root, with the Python of a venv on ``/usr/bin/python3`` that has Dovetail
installed (see ``smtp_throughput.py``, whose process helpers this script reuses).

Exit status: 0 when every command of every run got OK and every idle client reached IDLE, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smtp_throughput import (
    BenchError,
    _alive,
    _stop_tree,
    cpu_seconds,
    cpu_snapshot,
    dovetail_executable,
    free_port,
    memory_bytes,
    process_tree,
    run,
    wait_banner,
)
from tests.interop_dovecot import dovecot_conf  # smtp_throughput puts the repository on sys.path

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
DOMAIN = "example.test"
PASSWORD = "bench-password-1"
PER_SOURCE_IP = 40  # connections per loopback source address (Dovetail allows 50 per IP)
KINDS = ("LOGIN", "SELECT", "FETCH 1:* ENVELOPE", "FETCH BODY[]", "SEARCH UNSEEN", "SEARCH FROM", "SEARCH SINCE",
         "STORE", "APPEND", "EXPUNGE", "IDLE", "LOGOUT")
# Weighted mix of the commands a client sends inside a session (LOGIN, SELECT and the header sync
# come once per session; a session lasts SESSION_OPS of these).
MIX = {"FETCH BODY[]": 30, "SEARCH UNSEEN": 8, "SEARCH FROM": 6, "SEARCH SINCE": 6, "STORE": 20, "APPEND": 8,
       "EXPUNGE": 8, "IDLE": 6}
SESSION_OPS = 40
IDLE_HOLD = 0.05  # seconds a short IDLE is held before DONE

WORDS = ("the meeting report quarter budget project review draft invoice schedule customer team update release "
         "server network storage please thanks regards attached agenda question answer follow next week monday "
         "friday deadline contract proposal feedback change issue ticket deploy backup migration").split()
SENDERS = [f"{n.lower()}.{s.lower()}@{d}" for n, s, d in zip(
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Victor "
    "Walter Yolanda".split(),
    "Smith Jones Brown Miller Davis Garcia Wilson Moore Taylor Thomas Lee White Harris Clark Lewis Young King "
    "Scott Green Baker".split(),
    ["corp.test", "mail.test", "lists.test", "shop.test"] * 5, strict=True)]


# --------------------------------------------------------------------------- corpus


def _text(rng: random.Random, size: int) -> str:
    lines, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 13))).capitalize() + "."
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines) + "\n"


def _message(rng: random.Random, i: int, when: float) -> bytes:
    sender = rng.choice(SENDERS)
    name = sender.split("@")[0].replace(".", " ").title()
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).capitalize()
    if i % 9 == 0:
        subject = "=?UTF-8?B?w5xiZXJzaWNodA==?= " + subject
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    head = (f"Return-Path: <{sender}>\n"
            f"Received: from mx.{sender.split('@')[1]} (mx [192.0.2.{i % 250 + 1}])\n\tby mx.{DOMAIN} with ESMTPS"
            f" id B{i:06d}\n\tfor <user@{DOMAIN}>; {date}\n"
            f"Message-ID: <{i}.{int(when)}@{sender.split('@')[1]}>\n"
            f"Date: {date}\nFrom: {name} <{sender}>\nTo: User <user@{DOMAIN}>\n"
            + (f"Cc: {rng.choice(SENDERS)}\n" if i % 4 == 0 else "")
            + (f"In-Reply-To: <{i - 1}.0@{DOMAIN}>\n" if i % 5 == 0 else "")
            + f"Subject: {subject}\nMIME-Version: 1.0\n")
    kind = rng.random()
    if kind < 0.65:  # plain text, 1-8 KB
        return (head + "Content-Type: text/plain; charset=utf-8\n\n" + _text(rng, rng.randint(1000, 8000))).encode()
    if kind < 0.96:  # text + HTML alternative, 6-40 KB
        text = _text(rng, rng.randint(3000, 20000))
        html = "<html><body>" + "".join(f"<p>{p}</p>\n" for p in text.splitlines()) + "</body></html>\n"
        return (head + f'Content-Type: multipart/alternative; boundary="alt{i}"\n\n--alt{i}\n'
                "Content-Type: text/plain; charset=utf-8\n\n" + text + f"--alt{i}\n"
                "Content-Type: text/html; charset=utf-8\n\n" + html + f"--alt{i}--\n").encode()
    # text + a base64 attachment, 60-400 KB
    blob = rng.randbytes(rng.randint(45000, 300000))
    import base64

    b64 = base64.encodebytes(blob).decode()
    return (head + f'Content-Type: multipart/mixed; boundary="mix{i}"\n\n--mix{i}\n'
            "Content-Type: text/plain; charset=utf-8\n\n" + _text(rng, 800) + f"--mix{i}\n"
            f'Content-Type: application/pdf; name="report-{i}.pdf"\nContent-Transfer-Encoding: base64\n'
            f'Content-Disposition: attachment; filename="report-{i}.pdf"\n\n' + b64 + f"--mix{i}--\n").encode()


def make_corpus(dest: Path, count: int, seed: int) -> tuple[int, float]:
    """Write ``count`` messages into the Maildir ``dest`` (cur/, mostly \\Seen); returns (bytes, newest date)."""
    rng = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    now = time.time()
    total = 0
    for i in range(count):
        when = now - 90 * 86400 * (count - i) / count - rng.randint(0, 3600)
        data = _message(rng, i, when)
        total += len(data)
        flags = ("F" if rng.random() < 0.05 else "") + ("S" if rng.random() < 0.8 else "")
        wsize = len(data) + data.count(b"\n")
        name = f"{int(when)}.M{i}P1.bench,S={len(data)},W={wsize}:2,{flags}"
        path = dest / "cur" / name
        path.write_bytes(data)
        os.utime(path, (when, when))
    return total, now


def link_maildir(src: Path, dest: Path, uid: int, gid: int) -> None:
    """Hard-link the corpus into ``dest`` (files are immutable in a Maildir; renames stay per directory)."""
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(src / "cur"):
        os.link(entry.path, dest / "cur" / entry.name)
    chown_tree(dest, uid, gid)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for dirpath, _dirs, files in os.walk(top):
        os.chown(dirpath, uid, gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), uid, gid)


# --------------------------------------------------------------------------- client


class ImapError(Exception):
    pass


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")


class Client:
    """A minimal IMAP client over asyncio streams: enough for the commands of the mix."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w, self.n = reader, writer, 0

    @classmethod
    async def connect(cls, port: int, source: str) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=1 << 22)
        client = cls(reader, writer)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            writer.close()
            raise ImapError(f"greeting {greeting[:200]!r}")
        return client

    async def _line(self) -> bytes:
        line = await self.r.readline()
        if not line:
            raise ImapError("connection closed by server")
        parts = [line]
        while (m := _LITERAL.search(line)) is not None:
            parts.append(await self.r.readexactly(int(m.group(1))))
            line = await self.r.readline()
            parts.append(line)
        return b"".join(parts)

    async def _until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = await self._line()
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1:].split(b" ", 1)[0]
                if status != b"OK":
                    raise ImapError(line.decode(errors="replace").strip()[:200])
                lines.append(line)
                return lines
            lines.append(line)

    def _tag(self) -> bytes:
        self.n += 1
        return b"a%d" % self.n

    async def cmd(self, text: str) -> list[bytes]:
        tag = self._tag()
        self.w.write(tag + b" " + text.encode() + b"\r\n")
        return await self._until_tagged(tag)

    async def _continuation(self) -> None:
        while True:
            line = await self._line()
            if line.startswith(b"+"):
                return
            if not line.startswith(b"*"):
                raise ImapError(f"expected continuation, got {line[:200]!r}")

    async def append(self, mailbox: str, flags: str, data: bytes) -> int | None:
        tag = self._tag()
        self.w.write(tag + f" APPEND {mailbox} ({flags}) {{{len(data)}}}\r\n".encode())
        await self._continuation()
        self.w.write(data + b"\r\n")
        lines = await self._until_tagged(tag)
        m = _APPENDUID.search(lines[-1])
        return int(m.group(1)) if m else None

    async def idle(self, hold: float) -> float:
        """IDLE for ``hold`` seconds; returns the time spent waiting on the server (to ``+``, and DONE to OK)."""
        tag = self._tag()
        t0 = time.perf_counter()
        self.w.write(tag + b" IDLE\r\n")
        await self._continuation()
        waited = time.perf_counter() - t0
        await asyncio.sleep(hold)
        t1 = time.perf_counter()
        self.w.write(b"DONE\r\n")
        await self._until_tagged(tag)
        return waited + time.perf_counter() - t1

    async def close(self) -> None:
        self.w.close()
        try:
            await asyncio.wait_for(self.w.wait_closed(), 2)
        except (TimeoutError, OSError):
            pass


def source_ip(i: int) -> str:
    n = 2 + i // PER_SOURCE_IP
    return f"127.0.{n // 250}.{n % 250 + 2}" if n >= 250 else f"127.0.0.{n}"


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    server: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    last_end: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)

    @property
    def ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def merge(self, other: LoadResult) -> None:
        self.seconds += other.seconds
        self.cpu_seconds += other.cpu_seconds
        for k, v in other.latencies.items():
            self.latencies[k].extend(v)
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class Target:
    """A running server under test."""

    name: str
    port: int
    root_pid: int
    users: tuple[str, ...]
    pids: tuple[int, ...] = ()  # worker processes, for the profiler


async def client_loop(target: Target, idx: int, base_uids: list[int], newest: float, stop: float,
                      result: LoadResult, seed: int) -> None:
    rng = random.Random(seed * 7919 + idx)
    user = target.users[idx % len(target.users)]
    kinds, weights = list(MIX), list(MIX.values())
    appended: list[int] = []
    lat = result.latencies

    async def timed(kind: str, coro: object) -> object:
        t0 = time.perf_counter()
        value = await coro  # type: ignore[misc]
        result.last_end = time.perf_counter()
        lat[kind].append(result.last_end - t0)
        return value

    while time.perf_counter() < stop:
        client = await Client.connect(target.port, source_ip(idx))
        try:
            await timed("LOGIN", client.cmd(f'LOGIN "{user}" "{PASSWORD}"'))
            await timed("SELECT", client.cmd("SELECT INBOX"))
            await timed("FETCH 1:* ENVELOPE", client.cmd("FETCH 1:* (UID FLAGS ENVELOPE)"))
            for _ in range(SESSION_OPS):
                if time.perf_counter() >= stop:
                    break
                kind = rng.choices(kinds, weights)[0]
                if kind == "FETCH BODY[]":
                    uids = ",".join(str(u) for u in rng.sample(base_uids, 3))
                    await timed(kind, client.cmd(f"UID FETCH {uids} (UID FLAGS BODY.PEEK[])"))
                elif kind == "SEARCH UNSEEN":
                    await timed(kind, client.cmd("UID SEARCH UNSEEN"))
                elif kind == "SEARCH FROM":
                    await timed(kind, client.cmd(f'UID SEARCH FROM "{rng.choice(SENDERS).split("@")[0]}"'))
                elif kind == "SEARCH SINCE":
                    since = time.strftime("%d-%b-%Y", time.gmtime(newest - rng.randint(3, 20) * 86400))
                    await timed(kind, client.cmd(f"UID SEARCH SINCE {since}"))
                elif kind == "STORE":
                    sign = rng.choice("+-")
                    flag = rng.choice(("\\Flagged", "\\Seen", "\\Answered", "$Label1"))
                    await timed(kind, client.cmd(f"UID STORE {rng.choice(base_uids)} {sign}FLAGS ({flag})"))
                elif kind == "APPEND":
                    data = _message(rng, rng.randint(0, 10**6), newest).replace(b"\n", b"\r\n")
                    uid = await timed(kind, client.append("INBOX", "\\Seen", data))
                    if uid is None:
                        raise ImapError("APPEND without APPENDUID")
                    appended.append(uid)  # type: ignore[arg-type]
                elif kind == "EXPUNGE":
                    if not appended:
                        continue
                    uid = appended.pop(0)
                    await timed("STORE", client.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
                    await timed(kind, client.cmd(f"UID EXPUNGE {uid}"))
                elif kind == "IDLE":
                    waited = await client.idle(IDLE_HOLD)
                    result.last_end = time.perf_counter()
                    lat[kind].append(waited)
            await timed("LOGOUT", client.cmd("LOGOUT"))
        finally:
            await client.close()
    # Leave the mailbox as it was for the next round.
    if appended:
        client = await Client.connect(target.port, source_ip(idx))
        try:
            await client.cmd(f'LOGIN "{user}" "{PASSWORD}"')
            await client.cmd("SELECT INBOX")
            uids = ",".join(map(str, appended))
            await client.cmd(f"UID STORE {uids} +FLAGS.SILENT (\\Deleted)")
            await client.cmd(f"UID EXPUNGE {uids}")
            await client.cmd("LOGOUT")
        finally:
            await client.close()


async def warm_up(target: Target, expected: int) -> list[int]:
    """Log every user in once and sync headers (both servers build their index here); returns the UIDs."""
    uid_sets = []
    for i, user in enumerate(target.users):
        client = await Client.connect(target.port, source_ip(i))
        try:
            await client.cmd(f'LOGIN "{user}" "{PASSWORD}"')
            await client.cmd("SELECT INBOX")
            await client.cmd("FETCH 1:* (UID FLAGS ENVELOPE)")
            lines = await client.cmd("UID SEARCH ALL")
            uids = [int(x) for line in lines if line.startswith(b"* SEARCH") for x in line.split()[2:]]
            if len(uids) != expected:
                raise BenchError(f"{target.name}: {user} has {len(uids)} messages, expected {expected}")
            uid_sets.append(set(uids))
            await client.cmd("LOGOUT")
        finally:
            await client.close()
    return sorted(set.intersection(*uid_sets))


async def run_load(target: Target, clients: int, duration: float, base_uids: list[int], newest: float,
                   seed: int) -> LoadResult:
    result = LoadResult(target.name)
    before = cpu_snapshot(target.root_pid)
    start = time.perf_counter()
    stop = start + duration
    tasks = [asyncio.create_task(client_loop(target, i, base_uids, newest, stop, result, seed))
             for i in range(clients)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    # Until the last measured command answered: the clean-up of appended messages is not load.
    result.seconds = (result.last_end or time.perf_counter()) - start
    result.cpu_seconds = cpu_seconds(before, cpu_snapshot(target.root_pid))
    result.errors = [f"client {i}: {exc!r}" for i, exc in enumerate(outcomes) if isinstance(exc, BaseException)]
    return result


# --------------------------------------------------------------------------- idle memory


@dataclass
class IdleResult:
    server: str
    clients: int
    procs_before: int = 0
    procs_after: int = 0
    pss_before: int = 0
    pss_after: int = 0
    idle_cpu: float = 0.0  # cores busy while everyone IDLEs
    connect_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def per_connection(self) -> float:
        return (self.pss_after - self.pss_before) / self.clients


async def run_idle(target: Target, count: int, settle: float) -> IdleResult:
    result = IdleResult(target.name, count)
    result.procs_before = len(process_tree(target.root_pid))
    result.pss_before = memory_bytes(target.root_pid)[1]
    clients: list[Client] = []
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with gate:
            client = await Client.connect(target.port, source_ip(i))
            clients.append(client)
            await client.cmd(f'LOGIN "{target.users[i % len(target.users)]}" "{PASSWORD}"')
            await client.cmd("SELECT INBOX")
            client.idle_tag = client._tag()  # type: ignore[attr-defined]
            client.w.write(client.idle_tag + b" IDLE\r\n")  # type: ignore[attr-defined]
            await client._continuation()

    t0 = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        result.connect_seconds = time.perf_counter() - t0
        result.errors = [f"idle client {i}: {exc!r}" for i, exc in enumerate(outcomes)
                         if isinstance(exc, BaseException)][:5]
        await asyncio.sleep(settle)
        before = cpu_snapshot(target.root_pid)
        c0 = time.perf_counter()
        await asyncio.sleep(settle)
        result.idle_cpu = cpu_seconds(before, cpu_snapshot(target.root_pid)) / (time.perf_counter() - c0)
        result.procs_after = len(process_tree(target.root_pid))
        result.pss_after = memory_bytes(target.root_pid)[1]
    finally:
        for client in clients:
            client.w.write(b"DONE\r\n")
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return result


def wait_idle_gone(target: Target, baseline: int, timeout: float) -> None:
    """Wait until the server is back to its process count (Dovecot's imap processes have exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(process_tree(target.root_pid)) > baseline:
        time.sleep(0.2)


# --------------------------------------------------------------------------- servers


def wait_greeting(port: int, timeout: float, what: str) -> None:
    wait_banner(port, timeout, f"{what} IMAP", b"* OK", b"a LOGOUT\r\n")


@contextmanager
def dovetail_server(exe: str, base: Path, corpus: Path, users: int, workers: int | None) -> Iterator[Target]:
    data = base / "dovetail"
    dt = [exe, "--data-dir", str(data)]
    run([*dt, "init"])
    run([*dt, "tenant", "add", "bench"])
    run([*dt, "domain", "add", DOMAIN, "--tenant", "bench"])
    owner = os.stat(data)
    names = tuple(f"u{i}@{DOMAIN}" for i in range(users))
    for name in names:
        run([*dt, "mailbox", "add", name, "--password", PASSWORD])
        link_maildir(corpus, data / "mail" / "bench" / DOMAIN / name.split("@")[0], owner.st_uid, owner.st_gid)
    chown_tree(data / "mail", owner.st_uid, owner.st_gid)
    run([*dt, "config", "set", "server.shutdown_grace=5s"])
    run([*dt, "config", "set", "imap.max_connections_per_user=5000"])
    port = free_port()
    with (data / "dovetail.toml").open("a") as f:
        f.write(f'\n[services.imapd]\nlisten = ["127.0.0.1:{port}"]\n' + (f"workers = {workers}\n" if workers else ""))
        for name in ("smtpd", "submission", "web", "replies"):
            f.write(f"\n[services.{name}]\nenabled = false\n")
    log = (base / "dovetail.log").open("wb")
    proc = subprocess.Popen([*dt, "serve", "--imap", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pids: list[int] = [proc.pid]
    try:
        wait_greeting(port, 60, "dovetail")
        if proc.poll() is not None:
            raise BenchError(f"dovetail serve exited {proc.returncode}; see {log.name}")
        pids = process_tree(proc.pid)
        yield Target("Dovetail", port, proc.pid, names, tuple(pids[1:]))
    finally:
        pids = list({*pids, *process_tree(proc.pid)})
        _stop_tree(proc.pid, pids, 10)
        proc.wait()
        log.close()


def _master_pid(d: Path) -> int:
    return int((d / "run" / "master.pid").read_text().split()[0])


@contextmanager
def dovecot_server(base: Path, corpus: Path, users: int, mail_user: str, max_clients: int) -> Iterator[Target]:
    import pwd

    pw = pwd.getpwnam(mail_user)
    d = base / "dovecot"
    for sub in ("run", "state", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    names = tuple(f"u{i}@{DOMAIN}" for i in range(users))
    lines = []
    for name in names:
        home = d / "home" / name
        link_maildir(corpus, home / "Maildir", pw.pw_uid, pw.pw_gid)
        chown_tree(home, pw.pw_uid, pw.pw_gid)
        lines.append(f"{name}:{{PLAIN}}{PASSWORD}::::{home}::\n")
    (d / "passwd").write_text("".join(lines))
    port = free_port()
    procs = max_clients + 200
    conf = d / "dovecot.conf"
    conf.write_text(dovecot_conf(d, port, pw.pw_uid, pw.pw_gid, name="dovetail-bench", max_userip=5000,
                                 process_limit=procs))
    with open(d / "start.log", "wb") as out:
        started = subprocess.run([DOVECOT, "-c", str(conf)], stdout=out, stderr=out, timeout=30)
    if started.returncode != 0:
        raise BenchError("dovecot failed to start: " + (d / "start.log").read_text()[-500:])
    pid = 0
    try:
        wait_greeting(port, 30, "dovecot")
        pid = _master_pid(d)
        yield Target("Dovecot", port, pid, names)
    finally:
        pids = process_tree(pid) if pid else []
        subprocess.run([DOVEADM, "-c", str(conf), "stop"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------- report


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def load_table(results: dict[str, LoadResult]) -> str:
    dt, dc = results.get("Dovetail"), results.get("Dovecot")
    head = ["command", "Dovetail ops/s", "p50 ms", "p99 ms", "Dovecot ops/s", "p50 ms", "p99 ms", "ops/s ratio"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(r: LoadResult | None, kind: str | None) -> list[str]:
        if r is None or not r.seconds:
            return ["-", "-", "-"]
        vals = [x for k in KINDS for x in r.latencies[k]] if kind is None else r.latencies[kind]
        return [f"{len(vals) / r.seconds:.1f}", f"{1000 * _pct(vals, 0.5):.1f}", f"{1000 * _pct(vals, 0.99):.1f}"]

    def ratio(kind: str | None) -> str:
        if not (dt and dc and dt.seconds and dc.seconds):
            return "-"
        a = dt.ops if kind is None else len(dt.latencies[kind])
        b = dc.ops if kind is None else len(dc.latencies[kind])
        return f"{(a / dt.seconds) / (b / dc.seconds):.2f}×" if b else "-"

    for kind in KINDS:
        rows.append("| " + " | ".join([kind, *cells(dt, kind), *cells(dc, kind), ratio(kind)]) + " |")
    rows.append("| " + " | ".join(["**all**", *cells(dt, None), *cells(dc, None), ratio(None)]) + " |")
    cpu = [f"{1000 * r.cpu_seconds / r.ops:.2f}" if r and r.ops else "-" for r in (dt, dc)]
    rows.append(f"| server CPU ms/op | {cpu[0]} | | | {cpu[1]} | | | |")
    return "\n".join(rows)


def idle_table(results: list[IdleResult]) -> str:
    rows = ["| server | idle clients | processes before → after | PSS before → after MB | PSS KB per connection "
            "| CPU while idle (cores) | connect+login+IDLE s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.server} | {r.clients} | {r.procs_before} → {r.procs_after} | "
                    f"{r.pss_before / 2**20:.1f} → {r.pss_after / 2**20:.1f} | {r.per_connection / 1024:.0f} | "
                    f"{r.idle_cpu:.3f} | {r.connect_seconds:.1f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- main


def start_py_spy(pids: tuple[int, ...], out: Path) -> list[subprocess.Popen[bytes]]:
    spy = Path(sys.executable).parent / "py-spy"
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([str(spy), "record", "--pid", str(p), "--format", "raw", "--gil", "--nonblocking",
                              "-o", str(out / f"worker-{p}.txt")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for p in pids]


def stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    if hard != resource.RLIM_INFINITY and hard < want:
        hard = want  # root may raise the hard limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages in every user's INBOX (default 2000)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent load clients (default 20)")
    ap.add_argument("--users", type=int, default=4, help="users the load clients are spread over (default 4)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per server and round")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved load rounds; the table pools them")
    ap.add_argument("--idle", type=int, default=1000, help="idle IDLE clients for the memory measure (0: skip)")
    ap.add_argument("--workers", type=int, help="Dovetail imapd workers (default: Dovetail's, one per CPU)")
    ap.add_argument("--mail-user", default="dovetail", help="non-root uid Dovecot serves mail as")
    ap.add_argument("--skip-dovecot", action="store_true")
    ap.add_argument("--skip-dovetail", action="store_true")
    ap.add_argument("--dovetail", help="dovetail executable (default: next to this Python)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, Maildirs)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="py-spy record every Dovetail worker (imapd, qmgr) during the load into DIR (summarise with "
                         "pyspy_top.py; the figures of such a run are not comparable)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: run as root (Dovecot serves mail as a separate uid, Dovetail's workers drop to theirs)",
              file=sys.stderr)
        return 1
    if not args.skip_dovecot and not os.access(DOVECOT, os.X_OK):
        print(f"error: {DOVECOT} not found (Debian packages dovecot-core dovecot-imapd)", file=sys.stderr)
        return 1
    raise_nofile(4 * args.idle + 4096)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="dovetail-imapbench-"))
    base.chmod(0o755)
    loads: dict[str, LoadResult] = {}
    idles: list[IdleResult] = []
    failed = False
    try:
        print(f"corpus: {args.messages} messages", file=sys.stderr, flush=True)
        size, newest = make_corpus(base / "corpus", args.messages, args.seed)
        print(f"  {size / 2**20:.1f} MB, {size / args.messages / 1024:.1f} KB average", file=sys.stderr)
        with ExitStack() as stack:
            targets: list[Target] = []
            if not args.skip_dovetail:
                exe = dovetail_executable(args.dovetail)
                targets.append(stack.enter_context(
                    dovetail_server(exe, base, base / "corpus", args.users, args.workers)))
            if not args.skip_dovecot:
                targets.append(stack.enter_context(
                    dovecot_server(base, base / "corpus", args.users, args.mail_user, args.idle)))
            uids: dict[str, list[int]] = {}
            for t in targets:
                t0 = time.perf_counter()
                uids[t.name] = asyncio.run(warm_up(t, args.messages))
                print(f"{t.name}: warm-up (first login and header sync of {len(t.users)} users) "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for rnd in range(1, args.rounds + 1):
                for t in targets:
                    print(f"round {rnd}: {t.name}, {args.clients} clients, {args.duration:g} s",
                          file=sys.stderr, flush=True)
                    spies = start_py_spy(t.pids, args.profile) if args.profile and t.pids else []
                    try:
                        r = asyncio.run(run_load(t, args.clients, args.duration, uids[t.name], newest, args.seed))
                    finally:
                        stop_spies(spies)
                    print(f"  {r.ops / r.seconds:.0f} ops/s, {1000 * r.cpu_seconds / max(r.ops, 1):.2f} ms CPU/op"
                          + (f", {len(r.errors)} failed clients: {r.errors[0]}" if r.errors else ""),
                          file=sys.stderr, flush=True)
                    failed |= bool(r.errors)
                    loads.setdefault(t.name, LoadResult(t.name)).merge(r)
            if args.idle:
                for t in targets:
                    print(f"{t.name}: {args.idle} idle clients", file=sys.stderr, flush=True)
                    baseline = len(process_tree(t.root_pid))
                    ir = asyncio.run(run_idle(t, args.idle, 3.0))
                    print(f"  {ir.per_connection / 1024:.0f} KB PSS per connection"
                          + (f", failures: {ir.errors}" if ir.errors else ""), file=sys.stderr, flush=True)
                    failed |= bool(ir.errors)
                    idles.append(ir)
                    wait_idle_gone(t, baseline, 30)
    except (BenchError, ImapError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed = True
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if loads:
        print(load_table(loads))
    if idles:
        print()
        print(idle_table(idles))
    return 1 if failed or not (loads or idles) else 0


if __name__ == "__main__":
    sys.exit(main())
