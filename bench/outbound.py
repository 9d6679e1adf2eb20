#!/usr/bin/env python3
"""Outbound: Dovetail's queue → DKIM → relay path against Postfix relaying the same load, in one run.

    python bench/outbound.py [--messages 2000] [--concurrency 20] [--rounds 3] [--sign-seconds 2]
                             [--qmgr-workers N] [--keep]

Both servers relay to one Postfix ``smtp-sink`` on a loopback port, and both are timed the same way:
the queue already holds the N messages (2 KB, one recipient each, the same bytes), the clock starts
when the queue is let go and stops when the sink has counted the Nth message (``smtp-sink -c`` prints
a running message counter, read by this script). Neither side uses TLS; both reuse connections.

- **Dovetail** runs in a child process (this script with ``--child``): a fresh data directory with a
  tenant, the domain and its DKIM keys (RSA-2048 and Ed25519, both active), a relay transport to the
  sink, N messages put in the queue with ``Queue.inject``. Then it forks ``--qmgr-workers`` queue
  manager processes as ``dovetail serve`` runs them (default: one per CPU, at most 8; uvloop), each
  owning a shard of the queue with its share of ``--concurrency`` (``max_concurrent_deliveries`` and
  ``destination_concurrency``), with its runtime and signing keys loaded before the clock starts. On
  "go" they start with the outbound agent, which signs every message with both keys at delivery time
  and relays it.
- **Postfix** is a private instance (``postfix -c DIR``): ``relayhost = [127.0.0.1]:SINKPORT``, no DNS,
  ``default_destination_concurrency_limit`` = ``--concurrency`` (slow start and connection caching
  left at their defaults). Intake: ``smtp-source -s 20 -F MESSAGE`` into its smtpd, where
  ``smtpd_data_restrictions`` put every message on hold, so the queue fills without delivering.
  Drain: ``postsuper -H ALL`` + ``postqueue -f``, timed like Dovetail's drain.
- **Postfix + OpenDKIM** (when ``/usr/sbin/opendkim`` exists): Postfix signs at intake, not at
  delivery, because milters see only mail arriving through smtpd or sendmail (not ``postsuper -r``).
  So the intake goes through a second smtpd whose ``smtpd_milters`` are two OpenDKIM processes, one
  with the RSA-2048 key and one with the Ed25519 key (OpenDKIM 2.11 has one ``SignatureAlgorithm``
  per instance), relaxed/relaxed, ``From`` oversigned; the script checks that a held message carries
  both signatures. Its drain is the same as plain Postfix's; its signing cost shows in the intake.

Columns: queue → sink msg/s is N over the drain time (median over rounds, range in brackets), "vs
Postfix" its ratio to plain Postfix's; queue → sink CPU ms/msg is the user+system time of the server's
process tree over the drain (Dovetail: the child and its queue manager processes; Postfix: the master's
tree); intake msg/s and CPU are smtp-source → held in Postfix's queue (the tree plus the opendkim
processes); "sign + relay CPU" is what signing and relaying cost per message wherever it happens: the
drain CPU, plus for Postfix + OpenDKIM its intake CPU minus plain Postfix's intake CPU. Dovetail's own
intake (``Queue.inject`` in the child, before the clock starts) is not measured here;
``smtp_throughput.py`` covers intake.

The DKIM micro-benchmark signs the same message in a loop in this process for ``--sign-seconds``
each: ``dovetail.outbound.dkim.sign`` with each key and with both, and dkimpy's ``dkim.sign`` with the
same RSA key (dkimpy does RSA in pure Python).

Needs root (private Postfix) and Debian's postfix package. The Dovetail child runs as the caller with
the Python running this script (``sys.executable``), so any environment with Dovetail installed works.
Every process started is stopped on exit. Exit status 1 when a run failed (its row says why).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_throughput import cpu_seconds, cpu_snapshot  # noqa: E402  (also puts the repository on sys.path)
from tests.interop_postfix import BASE_CF, MASTER_CF  # noqa: E402  (one configuration for tests and benchmarks)

from dovetail.master.services import QMGR_WORKERS  # noqa: E402

POSTFIX = "/usr/sbin/postfix"
POSTSUPER = "/usr/sbin/postsuper"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCAT = "/usr/sbin/postcat"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
OPENDKIM = "/usr/sbin/opendkim"
DOMAIN = "acme.example"
SENDER = f"alice@{DOMAIN}"
RCPT = "bob@example.org"
SESSIONS = 20
STALL = 30.0

MESSAGE = (b"From: Alice <alice@acme.example>\r\nTo: bob@example.org\r\nSubject: bench\r\n"
           b"Message-ID: <%d@acme.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           + (b"y" * 72 + b"\r\n") * 25)


class BenchError(Exception):
    """A run that could not complete: the figure would be meaningless."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(i: int) -> bytes:
    return MESSAGE.replace(b"%d", str(i).encode())


def run(cmd: list[str], timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr + proc.stdout).strip()[-500:]}")
    return proc.stdout


def stop(proc: subprocess.Popen, wait: float = 10) -> None:  # type: ignore[type-arg]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the sink


class Sink:
    """``smtp-sink -c`` on a loopback port; ``count`` is its running message counter."""

    def __init__(self) -> None:
        self.port = free_port()
        self.count = 0
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "256"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while chunk := self.proc.stdout.read1(4096):
            buf += chunk
            *done, buf = buf.split(b"\r")
            for line in reversed(done):
                for item in line.split():
                    if item.startswith(b"mesg="):
                        self.count = int(item[5:])
                        break
                else:
                    continue
                break

    def wait_for(self, target: int, alive: Callable[[], str | None]) -> float:
        """Poll until the counter reaches ``target``; the time it did. ``alive`` names a dead peer."""
        last, last_change = -1, time.perf_counter()
        while True:
            n, now = self.count, time.perf_counter()
            if n >= target:
                return now
            if n != last:
                last, last_change = n, now
            elif now - last_change > STALL:
                raise BenchError(f"sink stalled at {n}/{target} for {STALL:g}s")
            dead = alive()
            if dead:
                raise BenchError(dead)
            time.sleep(0.001 if target - n <= 20 else 0.01)

    def stop(self) -> None:
        stop(self.proc)


# --------------------------------------------------------------------------- DKIM micro-benchmark


@dataclass
class Keys:
    rsa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ed_key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    def pem(self, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, fmt: serialization.PrivateFormat) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def sign_rates(keys: Keys, seconds: float) -> list[tuple[str, float]]:
    import dkim  # dkimpy

    from dovetail.outbound.dkim import SIGNED_HEADERS, SigningKey, sign

    msg = message(1)
    rsa_k = SigningKey(DOMAIN, "rsa", "rsa-sha256", keys.rsa_key)
    ed_k = SigningKey(DOMAIN, "ed", "ed25519-sha256", keys.ed_key)
    # dkimpy parses PKCS#1 ("RSA PRIVATE KEY") PEM only.
    rsa_pem = keys.pem(keys.rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    present = [h.encode() for h in SIGNED_HEADERS if h.encode() + b":" in msg.lower()]
    return [
        ("Dovetail `dkim.sign` RSA-2048", rate(lambda: sign(msg, [rsa_k]), seconds)),
        ("Dovetail `dkim.sign` Ed25519", rate(lambda: sign(msg, [ed_k]), seconds)),
        ("Dovetail `dkim.sign` RSA-2048 + Ed25519 (both on each message)",
         rate(lambda: sign(msg, [rsa_k, ed_k]), seconds)),
        ("dkimpy `dkim.sign` RSA-2048", rate(lambda: dkim.sign(msg, b"rsa", DOMAIN.encode(), rsa_pem,
                                                               canonicalize=(b"relaxed", b"relaxed"),
                                                               include_headers=present), seconds)),
    ]


# --------------------------------------------------------------------------- Dovetail (child process)


def child(data: Path, port: int, messages: int, concurrency: int, workers: int) -> None:
    """Set up a Dovetail with N queued messages, start ``workers`` queue managers (one process per shard
    of the queue, as ``dovetail serve`` runs them), say "ready", wait for "go", drain, say "done"."""
    from dovetail.db import make_engine, migrate
    from dovetail.directory import Directory
    from dovetail.log import configure
    from dovetail.outbound.keys import DkimKeys
    from dovetail.outbound.transports import Transports
    from dovetail.queue import Envelope, Queue, QueueRecipient, Shard

    configure(level="warning")
    engine = make_engine(f"sqlite:///{data / 'db.sqlite'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add(DOMAIN, "acme")
    keys = DkimKeys(engine, data / "dkim")
    keys.ensure(DOMAIN)
    algorithms = sorted(k.algorithm for k in keys.signing_keys(DOMAIN))
    if algorithms != ["ed25519-sha256", "rsa-sha256"]:
        raise BenchError(f"Dovetail signing keys: {algorithms}")
    Transports(engine).set("default", "*", "relay", host="127.0.0.1", port=port, tls="none")
    queue = Queue(data / "queue")
    qids = [queue.inject(Envelope(SENDER, [QueueRecipient(RCPT)]), message(i)) for i in range(messages)]
    engine.dispose()  # each queue manager process opens its own connections
    shards = [Shard(i, workers) for i in range(workers)]
    procs = []
    for shard in shards:
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(out_r)
            code = 1
            try:
                expected = sum(1 for q in qids if shard.owns(q))
                _drain(data, shard, expected, -(-concurrency // workers), go_r, out_w)
                code = 0
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(out_w)
        procs.append((pid, go_w, out_r))
    for pid, _, out_r in procs:  # each queue manager process has its runtime and keys loaded
        if os.read(out_r, 1) != b"r":
            raise BenchError(f"queue manager process {pid} did not start")
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    for _, go_w, _ in procs:
        os.write(go_w, b"g")
    made = reused = 0
    failed = []
    for pid, go_w, out_r in procs:
        with os.fdopen(out_r) as out:
            said = out.read().split()
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        if status != 0 or len(said) != 2:
            failed.append(pid)
            continue
        made, reused = made + int(said[0]), reused + int(said[1])
    if failed:
        raise BenchError(f"queue manager processes {failed} failed")
    print(f"done qmgr_processes={workers} connections={made} reused={reused}", flush=True)


def _drain(data: Path, shard: object, expected: int, concurrency: int, go: int, out: int) -> None:
    """One queue manager process (forked by ``child``): deliver this shard's ``expected`` messages."""
    import asyncio

    import uvloop

    from dovetail.db import make_engine
    from dovetail.outbound.delivery import AgentConfig, OutboundAgent
    from dovetail.outbound.keys import DkimKeys
    from dovetail.outbound.transports import Transports
    from dovetail.queue import Queue, QueueConfig, QueueManager, Shard

    assert isinstance(shard, Shard)
    engine = make_engine(f"sqlite:///{data / 'db.sqlite'}")
    queue = Queue(data / "queue")
    agent = OutboundAgent(Transports(engine), DkimKeys(engine, data / "dkim"),
                          AgentConfig(destination_concurrency=concurrency))
    agent.keys.signing_keys(DOMAIN)  # type: ignore[union-attr]  # loaded before the clock, as a running qmgr has them
    os.write(out, b"r")
    os.read(go, 1)

    async def drain() -> None:
        manager = QueueManager(queue, lambda _a: agent, QueueConfig(max_concurrent_deliveries=concurrency),
                               shard=shard)
        task = asyncio.create_task(manager.run())
        while manager.delivered < expected:  # noqa: ASYNC110 - the manager exposes a counter only
            if task.done():
                task.result()
                raise BenchError("queue manager stopped")
            await asyncio.sleep(0.05)
        manager.stop()
        await task
        await agent.close()

    uvloop.install()  # as in every worker of `dovetail serve`
    asyncio.run(drain())
    os.write(out, f"{agent.connections_made} {agent.connections_reused}".encode())


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    intake_seconds: list[float] = field(default_factory=list)
    intake_cpu: list[float] = field(default_factory=list)
    note: str = ""
    error: str = ""


def run_dovetail(tmp: Path, sink: Sink, messages: int, concurrency: int, workers: int, result: Result) -> None:
    data = tmp / f"dovetail-{len(result.seconds)}"
    data.mkdir()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(data), "--port", str(sink.port),
                             "--messages", str(messages), "--concurrency", str(concurrency),
                             "--qmgr-workers", str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Its own session, as Postfix's master daemonizes into one: with the kernel's
                            # autogroup scheduling, CPU is shared between sessions first, and Dovetail
                            # must not share its part with this script and the sink.
                            start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.wait(30)
            raise BenchError(f"Dovetail child failed: {proc.stderr.read()[-800:] if proc.stderr else ''}")
        base = sink.count
        before = cpu_snapshot(proc.pid)
        start = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = sink.wait_for(base + messages, lambda: f"Dovetail child exited {proc.returncode}"
                             if proc.poll() is not None and sink.count < base + messages else None)
        after = cpu_snapshot(proc.pid)
        tail = proc.stdout.readline().strip()
        if proc.wait(60) != 0:
            err = proc.stderr.read()[-800:] if proc.stderr else ""
            raise BenchError(f"Dovetail child exited {proc.returncode}: {err}")
        result.seconds.append(done - start)
        result.cpu.append(cpu_seconds(before, after))
        result.note = tail.removeprefix("done ")
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)


# --------------------------------------------------------------------------- Postfix (+ OpenDKIM)

# The interop tests' master.cf, plus a second smtpd whose mail goes through the OpenDKIM milters.
MILTER_SMTPD = "127.0.0.1:{milter_smtpd_port} inet n - n - - smtpd -o smtpd_milters={milters}\n"

# The interop tests' private instance, relaying everything to the sink (held mail is left for checks).
MAIN_CF = BASE_CF + """\
relayhost = [127.0.0.1]:{sink_port}
default_destination_concurrency_limit = {concurrency}
smtpd_data_restrictions = check_client_access static:HOLD
milter_default_action = tempfail
"""

OPENDKIM_CONF = """\
Mode s
Socket inet:{port}@127.0.0.1
SignatureAlgorithm {algorithm}
Canonicalization relaxed/relaxed
KeyTable file:{root}/keytable
SigningTable refile:{root}/signingtable
OversignHeaders From
UserID opendkim
PidFile {root}/opendkim.pid
Syslog no
RequireSafeKeys no
"""


class Postfix:
    def __init__(self, root: Path, sink_port: int, concurrency: int, milter_ports: list[int]) -> None:
        self.root = root
        self.port, self.milter_smtpd_port = free_port(), free_port()
        self.etc = root / "etc"
        self.etc.mkdir(parents=True)
        (root / "queue").mkdir()
        (root / "data").mkdir()
        owner = pwd.getpwnam("postfix")
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        (self.etc / "main.cf").write_text(MAIN_CF.format(root=root, sink_port=sink_port, concurrency=concurrency))
        milters = ",".join(f"inet:127.0.0.1:{p}" for p in milter_ports)
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port) + MILTER_SMTPD.format(
            milter_smtpd_port=self.milter_smtpd_port, milters=milters))
        self.cmd = [POSTFIX, "-c", str(self.etc)]
        self.started = False

    def start(self) -> None:
        run([*self.cmd, "check"])
        run([*self.cmd, "start"])
        self.started = True

    @property
    def master_pid(self) -> int:
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    def held(self) -> list[str]:
        try:
            return os.listdir(self.root / "queue" / "hold")
        except FileNotFoundError:
            return []

    def intake(self, port: int, messages: int, msg_file: Path, extra: list[int]) -> tuple[float, float]:
        """smtp-source N messages into smtpd on ``port`` (all held); (seconds, CPU seconds of tree + extra)."""
        pids = [self.master_pid, *extra]
        before = {pid: cpu_snapshot(pid) for pid in pids}
        start = time.perf_counter()
        run([SMTP_SOURCE, "-m", str(messages), "-s", str(SESSIONS), "-F", str(msg_file), "-f", SENDER,
             "-t", RCPT, "-M", "bench-client.test", f"127.0.0.1:{port}"], timeout=300)
        elapsed = time.perf_counter() - start
        cpu = sum(cpu_seconds(before[pid], cpu_snapshot(pid)) for pid in pids)
        if len(self.held()) != messages:
            raise BenchError(f"Postfix holds {len(self.held())} messages, expected {messages}")
        return elapsed, cpu

    def dkim_algorithms(self) -> list[str]:
        """The a= tags of the DKIM-Signature fields of one held message."""
        text = run([POSTCAT, "-c", str(self.etc), "-h", "-q", self.held()[0]])
        return sorted(part.strip().removeprefix("a=") for part in text.replace("\n", " ").split(";")
                      if part.strip().startswith("a="))

    def drain(self, sink: Sink, messages: int) -> tuple[float, float]:
        """Release every held message and flush; (seconds until the sink has them all, CPU seconds of the tree)."""
        master = self.master_pid
        base = sink.count
        before = cpu_snapshot(master)
        start = time.perf_counter()
        run([POSTSUPER, "-c", str(self.etc), "-H", "ALL"])
        run([POSTQUEUE, "-c", str(self.etc), "-f"])
        done = sink.wait_for(base + messages, lambda: None)
        return done - start, cpu_seconds(before, cpu_snapshot(master))

    def clear(self) -> None:
        """Drop whatever a failed round left in the queue, so the next round starts empty."""
        subprocess.run([POSTSUPER, "-c", str(self.etc), "-d", "ALL"], capture_output=True, timeout=60)

    def stop(self) -> None:
        if not self.started:
            return
        try:
            master = self.master_pid
        except (OSError, ValueError):
            master = 0
        subprocess.run([*self.cmd, "stop"], capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while master and Path(f"/proc/{master}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if master and Path(f"/proc/{master}").exists():
            os.kill(master, signal.SIGKILL)


def start_opendkim(root: Path, port: int, algorithm: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
                   keys: Keys) -> subprocess.Popen[bytes]:
    """One OpenDKIM signing with one key: 2.11 has a single ``SignatureAlgorithm`` per instance."""
    root.mkdir()
    owner = pwd.getpwnam("opendkim")
    path = root / "key.pem"
    path.write_bytes(keys.pem(key, serialization.PrivateFormat.PKCS8))
    path.chmod(0o600)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    selector = algorithm.split("-")[0]
    (root / "keytable").write_text(f"key {DOMAIN}:{selector}:{path}\n")
    (root / "signingtable").write_text(f"*@{DOMAIN} key\n")
    os.chown(root, owner.pw_uid, owner.pw_gid)
    conf = root / "opendkim.conf"
    conf.write_text(OPENDKIM_CONF.format(port=port, root=root, algorithm=algorithm))
    proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BenchError(f"opendkim exited {proc.returncode}: {err[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise BenchError("opendkim did not listen")


# --------------------------------------------------------------------------- report


def fmt_rate(messages: int, seconds: list[float]) -> str:
    if not seconds:
        return "-"
    rates = sorted(messages / s for s in seconds)
    med = statistics.median(rates)
    return f"{med:.0f}" + (f" ({rates[0]:.0f}–{rates[-1]:.0f})" if len(rates) > 1 else "")


def median_rate(messages: int, seconds: list[float]) -> float:
    return statistics.median(messages / s for s in seconds) if seconds else 0.0


def cpu_ms(messages: int, cpu: list[float]) -> str:
    return f"{1000 * statistics.median(cpu) / messages:.2f}" if cpu else "-"


def med_ms(messages: int, cpu: list[float]) -> float | None:
    return 1000 * statistics.median(cpu) / messages if cpu else None


def report(messages: int, rounds: int, results: list[Result], signs: list[tuple[str, float]]) -> None:
    """Markdown tables. "sign + relay CPU" adds to a row's drain CPU what its signing cost elsewhere:
    for Postfix + OpenDKIM, its intake CPU minus plain Postfix's intake CPU."""
    dovetail, plain, milter = results
    base = median_rate(messages, plain.seconds)
    plain_intake = med_ms(messages, plain.intake_cpu)
    print(f"\n{messages} messages × 2 KB, one recipient, {rounds} round(s), median (range)\n")
    print("| server | DKIM signing | queue → sink msg/s | vs Postfix | queue → sink CPU ms/msg "
          "| intake msg/s | intake CPU ms/msg | sign + relay CPU ms/msg |")
    print("|---|---|---|---|---|---|---|---|")
    signing = {"Dovetail": "RSA-2048 + Ed25519, at delivery", "Postfix": "none",
               "Postfix + OpenDKIM": "RSA-2048 + Ed25519, at intake (2 milters)"}
    for r in results:
        if not r.seconds:
            print(f"| {r.name} | {signing[r.name]} | failed: {r.error} | | | | | |")
            continue
        ratio = f"{median_rate(messages, r.seconds) / base:.2f}×" if base else "-"
        drain = med_ms(messages, r.cpu)
        total = drain
        if r is milter:
            intake = med_ms(messages, r.intake_cpu)
            total = drain + intake - plain_intake if drain is not None and intake is not None and plain_intake else None
        print(f"| {r.name} | {signing[r.name]} | {fmt_rate(messages, r.seconds)} | {ratio} | {cpu_ms(messages, r.cpu)} "
              f"| {fmt_rate(messages, r.intake_seconds)} | {cpu_ms(messages, r.intake_cpu)} "
              f"| {f'{total:.2f}' if total is not None else '-'} |")
    for r in results:
        if r.note:
            print(f"\n{r.name}: {r.note}")
        if r.error:
            print(f"\n{r.name} error: {r.error}")
    print("\n| DKIM signing, same 2 KB message, one process | signatures/s |")
    print("|---|---|")
    for label, value in signs:
        print(f"| {label} | {value:.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sign-seconds", type=float, default=2.0, help="duration of each signing micro-benchmark")
    ap.add_argument("--qmgr-workers", type=int, default=QMGR_WORKERS,
                    help="Dovetail queue manager processes, each with a shard of the queue and its share of "
                         "--concurrency (default: as `dovetail serve`, one per CPU up to 8)")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.port, args.messages, args.concurrency, args.qmgr_workers)
        return 0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    keys = Keys()
    signs = sign_rates(keys, args.sign_seconds)
    for label, value in signs:
        print(f"{label}: {value:.0f} signatures/s", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="dovetail-bench-outbound-"))
    tmp.chmod(0o755)
    dovetail, plain, milter = Result("Dovetail"), Result("Postfix"), Result("Postfix + OpenDKIM")
    failed = False
    with ExitStack() as stack:
        if args.keep:
            stack.callback(print, f"kept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        sink = Sink()
        stack.callback(sink.stop)
        msg_file = tmp / "message.eml"
        msg_file.write_bytes(message(1))
        postfix = None
        opendkim: list[subprocess.Popen[bytes]] | None = None
        if not args.skip_postfix:
            milter_ports = [free_port(), free_port()]
            if Path(OPENDKIM).exists():
                opendkim = []
                for port, algorithm, key in zip(milter_ports, ("rsa-sha256", "ed25519-sha256"),
                                                (keys.rsa_key, keys.ed_key), strict=True):
                    opendkim.append(start_opendkim(tmp / f"opendkim-{algorithm}", port, algorithm, key, keys))
                    stack.callback(stop, opendkim[-1])
            else:
                milter.error = "opendkim is not installed"
            postfix = Postfix(tmp / "postfix", sink.port, args.concurrency, milter_ports)
            stack.callback(postfix.stop)
            postfix.start()
            # Warm-up: smtpd, cleanup, qmgr and smtp processes started, the sink's first connections made.
            postfix.intake(postfix.port, 100, msg_file, [])
            postfix.drain(sink, 100)
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            try:
                run_dovetail(tmp, sink, args.messages, args.concurrency, args.qmgr_workers, dovetail)
            except BenchError as exc:
                dovetail.error, failed = str(exc), True
            if postfix is None:
                continue
            try:
                secs, cpu = postfix.intake(postfix.port, args.messages, msg_file, [])
                plain.intake_seconds.append(secs)
                plain.intake_cpu.append(cpu)
                secs, cpu = postfix.drain(sink, args.messages)
                plain.seconds.append(secs)
                plain.cpu.append(cpu)
            except BenchError as exc:
                plain.error, failed = str(exc), True
                postfix.clear()
            if opendkim is None:
                continue
            try:
                secs, cpu = postfix.intake(postfix.milter_smtpd_port, args.messages, msg_file,
                                           [p.pid for p in opendkim])
                algorithms = postfix.dkim_algorithms()
                if algorithms != ["ed25519-sha256", "rsa-sha256"]:
                    raise BenchError(f"OpenDKIM signatures on a held message: {algorithms}")
                milter.note = f"held messages carry DKIM-Signature a={', a='.join(algorithms)}"
                milter.intake_seconds.append(secs)
                milter.intake_cpu.append(cpu)
                secs, cpu = postfix.drain(sink, args.messages)
                milter.seconds.append(secs)
                milter.cpu.append(cpu)
            except BenchError as exc:
                milter.error, failed = str(exc), True
                postfix.clear()
        report(args.messages, args.rounds, [dovetail, plain, milter], signs)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        sys.exit(f"outbound benchmark failed: {exc}")
