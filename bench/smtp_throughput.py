#!/usr/bin/env python3
"""SMTP intake end to end: Dovetail against Postfix on the same box, in one run.

For each server, Postfix's ``smtp-source`` pushes M messages of a given size over S parallel sessions
(one connection per message, as smtp-source does by default), and the clock runs from the moment
smtp-source starts (its first connect) until the last message is a file in the mailbox's Maildir
``new/``. The Maildir is polled by counting directory entries; the poll is the measurement. Beside
smtp-source, a paced latency probe (``latency_probe.py``) times the end of DATA to ``250`` for messages of
the same shape (smtp-source reports no latency); its messages count in the rate and the CPU per message.

Both servers keep their durability: Dovetail fsyncs the queue file and its directory before ``250``,
Postfix fsyncs its queue files (its default), and both fsync the delivered Maildir file.

Dovetail runs as ``dovetail --data-dir DIR serve`` (master + smtpd workers + qmgr; the other services
are disabled) from a fresh data directory. The ``dovetail`` executable is taken from the directory of
the Python running this script, so run it with the interpreter of the environment Dovetail is installed
in. When run as root the workers drop to the ``dovetail`` user, who must be able to read that Python:
use a venv built on the system Python (``/usr/bin/python3 -m venv``), not one under ``/root``.

Postfix runs as a private instance (``postfix -c DIR start``) with its own queue and data directories,
``smtpd`` bound to a loopback port in master.cf, virtual(8) mailboxes in a Maildir owned by a non-root
uid, no chroot, no DNS, no reverse lookup of the client, logging to a file through postlogd
(Dovetail logs to a file too).

CPU is the user+system time of the server's process tree during the measured interval, read from
``/proc/<pid>/stat`` (live processes plus what the tree reaped); memory is the peak, over samples taken
every ~100 ms, of the summed RSS and PSS (``/proc/<pid>/smaps_rollup``) of that tree. Reading /proc is
done by hand so the script needs nothing beyond the standard library (psutil would do the same).

Exit status: 0 when every run delivered every message, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_probe import LatencyProbe  # noqa: E402
from tests.dnsserver import LoopbackDNS  # noqa: E402
from tests.interop_postfix import MAIN_CF, MASTER_CF  # noqa: E402  (one configuration for tests and benchmarks)

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"
DOMAIN = "example.test"
SENDER = "bench@sender.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MEM_SAMPLE_EVERY = 0.1


class BenchError(Exception):
    """A run that could not complete: the figure would be meaningless."""


# --------------------------------------------------------------------------- /proc


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields after "(comm)": rest[0] is field 3 (state); field N is rest[N - 3].
    return raw[raw.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        rest = _stat(int(entry.name))
        if rest is not None:
            children.setdefault(int(rest[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_snapshot(root: int) -> dict[int, int]:
    """Clock ticks per live process of the tree: own user+system plus reaped children's."""
    snap = {}
    for pid in process_tree(root):
        rest = _stat(pid)
        if rest is not None:
            snap[pid] = sum(int(x) for x in rest[11:15])
    return snap


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU the tree used between two snapshots.

    A process that died in between had its whole time folded into its parent's reaped-children time,
    including what it used before the first snapshot; that earlier part is taken off again.
    """
    ticks = sum(after.values()) - sum(v for pid, v in before.items() if pid in after)
    return ticks / CLK_TCK


def memory_bytes(root: int) -> tuple[int, int]:
    """Summed RSS and PSS of the tree, in bytes."""
    rss = pss = 0
    for pid in process_tree(root):
        rest = _stat(pid)
        if rest is None:
            continue
        rss += int(rest[21]) * PAGE
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return rss, pss


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port: int, timeout: float, what: str = "SMTP", greeting: bytes = b"220",
                goodbye: bytes = b"QUIT\r\n") -> None:
    """Wait until the server greets on ``port`` (its listener is up and a worker is serving)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(greeting):
                    s.sendall(goodbye)
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise BenchError(f"no {what} greeting on 127.0.0.1:{port} after {timeout:g}s ({last})")


def recipients_for(local: str, count: int) -> list[str]:
    """The addresses ``smtp-source -r count -t local@DOMAIN`` sends to: local, 2local, ... count+local."""
    return [local] + [f"{i}{local}" for i in range(2, count + 1)]


def count_files(dirs: list[Path]) -> int:
    total = 0
    for d in dirs:
        try:
            total += len(os.listdir(d))
        except FileNotFoundError:
            pass
    return total


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr + proc.stdout).strip()[-500:]}")
    return proc


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Load:
    messages: int
    size: int
    sessions: int
    recipients: int

    @property
    def label(self) -> str:
        return f"{self.size // 1024} KB" if self.size >= 1024 else f"{self.size} B"


@dataclass
class Result:
    server: str
    workers: str
    load: Load
    seconds: float = 0.0
    accept_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    peak_pss: int = 0
    probed: int = 0  # the latency probe's messages, counted in the rate and the CPU per message
    p50: float = 0.0
    p99: float = 0.0
    error: str = ""

    @property
    def messages(self) -> int:
        return self.load.messages + self.probed

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000 * self.cpu_seconds / self.messages


@dataclass
class Server:
    """A running server under test: where it listens, its process tree, the Maildirs it delivers to."""

    name: str
    workers: str
    port: int
    root_pid: int
    maildir_new: dict[str, Path] = field(default_factory=dict)  # local part -> .../new
    queue_dirs: dict[str, Path] = field(default_factory=dict)  # state name -> directory, for stall reports

    def queue_note(self) -> str:
        counts = {name: count_files([path]) for name, path in self.queue_dirs.items()}
        return "".join(f", {name} {n}" for name, n in counts.items() if n)

    def new_dirs(self, local: str, recipients: int) -> list[Path]:
        return [self.maildir_new[r] for r in recipients_for(local, recipients)]


def smtp_source(port: int, load: Load, rcpt: str, messages: int | None = None) -> subprocess.Popen[bytes]:
    cmd = [SMTP_SOURCE, "-m", str(messages or load.messages), "-s", str(load.sessions), "-l", str(load.size),
           "-f", SENDER, "-t", rcpt, "-M", "bench-client.test"]
    if load.recipients > 1:
        cmd += ["-r", str(load.recipients)]
    return subprocess.Popen([*cmd, f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_count(dirs: list[Path], target: int, source: subprocess.Popen[bytes], stall: float,
               on_sample: Callable[[], None] | None = None,
               queue_note: Callable[[], str] | None = None,
               on_source_done: Callable[[], int] | None = None) -> tuple[float, float]:
    """Poll the Maildirs until ``target`` files are there; return (done time, smtp-source exit time).

    ``on_source_done`` is called once when smtp-source has exited; it returns how many more files to
    wait for (the latency probe's, which stops then).

    The interval is 10 ms while far from the end and 1 ms for the last 2% (or 20 files), so the
    end-time resolution stays near a millisecond without the poll eating a core on a long run.
    """
    last_n, last_progress, last_sample = -1, time.perf_counter(), 0.0
    accepted_at = 0.0
    while True:
        n = count_files(dirs)
        now = time.perf_counter()
        if n >= target and (accepted_at or on_source_done is None):
            if not accepted_at and source.poll() is None:
                source.wait()
                accepted_at = time.perf_counter()
            return now, accepted_at or now
        if not accepted_at and source.poll() is not None:
            accepted_at = now
            if source.returncode != 0:
                err = source.stderr.read().decode(errors="replace").strip() if source.stderr else ""
                raise BenchError(f"smtp-source exited {source.returncode}: {err[-500:]}")
            if on_source_done is not None:
                target += on_source_done()
                continue
        if n != last_n:
            last_n, last_progress = n, now
        elif now - last_progress > stall:
            state = "finished" if accepted_at else "still sending"
            raise BenchError(f"stalled at {n}/{target} files for {stall:g}s (smtp-source {state}"
                             f"{queue_note() if queue_note else ''})")
        if on_sample is not None and now - last_sample >= MEM_SAMPLE_EVERY:
            on_sample()
            last_sample = now
        time.sleep(0.001 if target - n <= max(20, target // 50) else 0.01)


def measure(server: Server, load: Load, local: str, stall: float) -> Result:
    result = Result(server=server.name, workers=server.workers, load=load)
    dirs = server.new_dirs(local, load.recipients)
    rcpt = f"{local}@{DOMAIN}"
    # Warm-up: on-demand Postfix daemons started, Python workers past their first import.
    warm = max(load.sessions * 2, 40)
    src = smtp_source(server.port, load, rcpt, messages=warm)
    wait_count(dirs, warm * load.recipients, src, stall, queue_note=server.queue_note)
    src.wait()
    baseline = count_files(dirs)
    target = baseline + load.messages * load.recipients

    peak = [0, 0]

    def sample() -> None:
        rss, pss = memory_bytes(server.root_pid)
        peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

    probe = LatencyProbe(server.port, SENDER, [f"{r}@{DOMAIN}" for r in recipients_for(local, load.recipients)],
                         load.size)

    def probe_done() -> int:
        probe.stop()
        return probe.accepted * load.recipients

    sample()
    before = cpu_snapshot(server.root_pid)
    start = time.perf_counter()
    src = smtp_source(server.port, load, rcpt)
    probe.start()
    try:
        done, accepted = wait_count(dirs, target, src, stall, on_sample=sample, queue_note=server.queue_note,
                                    on_source_done=probe_done)
    finally:
        probe.stop()
        if src.poll() is None:
            src.kill()
            src.wait()
    after = cpu_snapshot(server.root_pid)
    sample()
    if src.returncode != 0:
        err = src.stderr.read().decode(errors="replace").strip() if src.stderr else ""
        raise BenchError(f"smtp-source exited {src.returncode}: {err[-500:]}")
    result.seconds = done - start
    result.accept_seconds = accepted - start
    result.cpu_seconds = cpu_seconds(before, after)
    result.peak_rss, result.peak_pss = peak
    if probe.error:
        raise BenchError(f"latency probe: {probe.error}")
    result.probed = probe.accepted
    result.p50, result.p99 = probe.percentile(0.5), probe.percentile(0.99)
    return result


# --------------------------------------------------------------------------- Dovetail


def dovetail_executable(override: str | None) -> str:
    path = Path(override) if override else Path(sys.executable).parent / "dovetail"
    if not path.exists():
        raise BenchError(f"no dovetail executable at {path}: run this script with the Python of the "
                         "environment Dovetail is installed in, or pass --dovetail")
    return str(path)


def _stop_tree(root: int, pids: list[int], term_wait: float) -> None:
    """SIGTERM ``root``, wait, then SIGKILL whatever of ``pids`` is still alive."""
    try:
        os.kill(root, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + term_wait
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    rest = _stat(pid)
    return rest is not None and rest[0] != "Z"


@contextmanager
def dovetail_server(exe: str, base: Path, workers: int, locals_: list[str], recipients: int,
                    profile_dir: Path | None, nameserver: str | None = None, direct: bool = True,
                    label: str = "") -> Iterator[Server]:
    """``nameserver``: sender authentication on, every lookup to that (loopback) DNS server; None: off.
    ``direct``: ``mx.direct_delivery`` (off: every message through the queue and the queue manager).
    ``label``: appended to the server's name (``base`` for the ``--baseline`` executable)."""
    suffix = f"{'-auth' if nameserver else ''}{'' if direct else '-queued'}{label and '-'}{label}"
    data = base / f"dovetail-w{workers}{suffix}"
    dt = [exe, "--data-dir", str(data)]
    run([*dt, "init"])
    run([*dt, "tenant", "add", "bench"])
    run([*dt, "domain", "add", DOMAIN, "--tenant", "bench"])
    for local in locals_:
        for r in recipients_for(local, recipients):
            run([*dt, "mailbox", "add", f"{r}@{DOMAIN}", "--password", "bench-password-1"])
    run([*dt, "config", "set", "server.shutdown_grace=5s"])
    run([*dt, "config", "set", f"mx.direct_delivery={'yes' if direct else 'no'}"])
    if nameserver:
        run([*dt, "config", "set", f"dns.nameservers={nameserver}"])
        run([*dt, "config", "set", "mx.sender_auth_exempt="])  # smtp-source connects from loopback
    else:
        run([*dt, "config", "set", "mx.sender_auth=no"])
    port = free_port()
    with (data / "dovetail.toml").open("a") as f:
        f.write(f'\n[services.smtpd]\nworkers = {workers}\nlisten = ["127.0.0.1:{port}"]\n')
        for name in ("submission", "imapd", "web", "replies"):
            f.write(f"\n[services.{name}]\nenabled = false\n")
    log = (base / f"{data.name}.log").open("wb")
    proc = subprocess.Popen([*dt, "serve"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    spies: list[subprocess.Popen[bytes]] = []
    pids: list[int] = [proc.pid]
    try:
        wait_banner(port, 60)
        if proc.poll() is not None:
            raise BenchError(f"dovetail serve exited {proc.returncode}; see {log.name}")
        pids = process_tree(proc.pid)
        name = ("Dovetail+auth" if nameserver else "Dovetail") + ("" if direct else " queued") + (label and " ") + label
        server = Server(name, str(workers), port, proc.pid,
                        queue_dirs={f"queue {q}": data / "queue" / q for q in ("incoming", "active", "deferred")})
        for local in locals_:
            for r in recipients_for(local, recipients):
                server.maildir_new[r] = data / "mail" / "bench" / DOMAIN / r / "new"
        if profile_dir is not None:
            spies = start_py_spy(pids[1:], profile_dir / data.name)
        yield server
    finally:
        pids = list({*pids, *process_tree(proc.pid)})
        for spy in spies:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        _stop_tree(proc.pid, pids, 15)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def sender_zone() -> Iterator[LoopbackDNS]:
    """The sender's domain as the internet would publish it: SPF allowing loopback, a DMARC record."""
    with LoopbackDNS() as dns_:
        domain = SENDER.rpartition("@")[2]
        dns_.txt(domain, "v=spf1 ip4:127.0.0.0/8 -all")
        dns_.txt(f"_dmarc.{domain}", "v=DMARC1; p=reject")
        yield dns_


def start_py_spy(pids: list[int], out: Path) -> list[subprocess.Popen[bytes]]:
    """One ``py-spy record`` per worker (raw collapsed stacks), stopped with SIGINT at the end."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--nonblocking",
               "-o", str(out / f"{pid}.txt")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)  # py-spy attaches before the measured load starts
    return procs


# --------------------------------------------------------------------------- Postfix


@contextmanager
def postfix_server(base: Path, locals_: list[str], recipients: int, mail_user: str) -> Iterator[Server]:
    root = base / "postfix"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (root / "mail").mkdir()
    (root / "data").mkdir()
    (root / "queue").mkdir()
    pw = pwd.getpwnam(mail_user)
    os.chown(root / "mail", pw.pw_uid, pw.pw_gid)
    owner = pwd.getpwnam("postfix")
    os.chown(root / "data", owner.pw_uid, owner.pw_gid)
    port = free_port()
    (etc / "main.cf").write_text(MAIN_CF.format(root=root, base=root / "mail", domains=DOMAIN, uid=pw.pw_uid,
                                                gid=pw.pw_gid))
    (etc / "master.cf").write_text(MASTER_CF.format(port=port))
    boxes = [r for local in locals_ for r in recipients_for(local, recipients)]
    (etc / "vmailbox").write_text("".join(f"{r}@{DOMAIN} {DOMAIN}/{r}/\n" for r in boxes))
    run([POSTMAP, "-c", str(etc), f"hash:{etc}/vmailbox"])
    pf = [POSTFIX, "-c", str(etc)]
    pidfile = root / "queue" / "pid" / "master.pid"
    master = 0
    pids: list[int] = []
    try:
        run([*pf, "start"])
        deadline = time.monotonic() + 30
        while not master and time.monotonic() < deadline:
            try:
                master = int(pidfile.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.05)
        if not master:
            raise BenchError(f"Postfix master did not write {pidfile}")
        wait_banner(port, 30)
        server = Server("Postfix", "-", port, master,
                        queue_dirs={f"queue {q}": root / "queue" / q for q in ("incoming", "active")})
        for r in boxes:
            server.maildir_new[r] = root / "mail" / DOMAIN / r / "new"
        yield server
    finally:
        if master:
            pids = process_tree(master)
        subprocess.run([*pf, "stop"], capture_output=True)
        if master:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.05)
            for p in pids:
                if _alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


# --------------------------------------------------------------------------- report


def summarise(runs: list[Result]) -> tuple[Result, float, float]:
    """The median run by elapsed time, and the lowest and highest rate of the rounds."""
    ok = sorted((r for r in runs if not r.error), key=lambda r: r.seconds)
    if not ok:
        return runs[0], 0.0, 0.0
    return ok[(len(ok) - 1) // 2], ok[-1].rate, ok[0].rate


def table(groups: dict[tuple[Load, str, str], list[Result]]) -> str:
    head = ("| size | sessions | messages | server | smtpd workers | seconds | accept s | msg/s | vs Postfix "
            "| CPU ms/msg | DATA→250 p50 ms | p99 ms | peak RSS MB | peak PSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    postfix = {load: summarise(runs)[0] for (load, server, _), runs in groups.items() if server == "Postfix"}
    for (load, server, workers), runs in groups.items():
        r, low, high = summarise(runs)
        messages = str(load.messages) + (f" × {load.recipients} rcpt" if load.recipients > 1 else "")
        cells = [load.label, str(load.sessions), messages, server, workers]
        if r.error:
            lines.append("| " + " | ".join(cells) + f" | failed: {r.error} | | | | | | | | |")
            continue
        rounds = sum(1 for x in runs if not x.error)
        rate = f"{r.rate:.0f}" + (f" ({low:.0f}–{high:.0f})" if rounds > 1 else "")
        base = postfix.get(load)
        ratio = f"{r.rate / base.rate:.2f}×" if base and not base.error and base.rate else "-"
        cells += [f"{r.seconds:.2f}", f"{r.accept_seconds:.2f}", rate, ratio, f"{r.cpu_ms_per_message:.2f}",
                  f"{1000 * r.p50:.1f}", f"{1000 * r.p99:.1f}", f"{r.peak_rss / 2**20:.0f}",
                  f"{r.peak_pss / 2**20:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_load(text: str) -> tuple[int, int]:
    try:
        m, _, s = text.lower().partition("x")
        size = int(s[:-1]) * 1024 if s.endswith("k") else int(s)
        return int(m), size
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MESSAGESxSIZE such as 5000x2048 or 1000x100k, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=parse_load, nargs="+", default=[(5000, 2048), (1000, 102400)],
                    metavar="MxSIZE", help="messages x payload bytes (k suffix: KiB); default 5000x2048 1000x100k")
    ap.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions (default 20)")
    ap.add_argument("--recipients", type=int, default=1,
                    help="recipients per message, each its own mailbox (smtp-source -r; default 1)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dovetail smtpd worker counts")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every server this many times, interleaved; the table shows the median")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--skip-dovetail", action="store_true")
    ap.add_argument("--dovetail", help="dovetail executable (default: next to this Python)")
    ap.add_argument("--baseline", metavar="EXE",
                    help="another dovetail executable (e.g. main's) measured as 'Dovetail base', interleaved "
                         "with the others in every round, for before/after figures from one run")
    ap.add_argument("--mail-user", default="dovetail", help="non-root owner of Postfix's Maildirs")
    ap.add_argument("--stall", type=float, default=60.0, help="fail when no file arrives for this long")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, Maildirs)")
    ap.add_argument("--sender-auth", choices=("off", "on", "both"), default="off",
                    help="Dovetail's SPF/DKIM/DMARC checks at intake (on/both: against a loopback DNS server "
                         "publishing SPF and DMARC for the sender's domain)")
    ap.add_argument("--direct", choices=("on", "off", "both"), default="on",
                    help="mx.direct_delivery: all-local messages into the Maildir before 250 (on), through the "
                         "queue (off), or one server of each, interleaved (both)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="py-spy record each Dovetail worker into DIR (slows Dovetail; figures not comparable)")
    args = ap.parse_args(argv)

    for tool in (SMTP_SOURCE,) + (() if args.skip_postfix else (POSTFIX, POSTMAP)):
        if not os.access(tool, os.X_OK):
            print(f"error: {tool} not found (Debian package postfix)", file=sys.stderr)
            return 1
    loads = [Load(m, s, args.sessions, args.recipients) for m, s in args.load]
    locals_ = [f"load{i}" for i in range(len(loads))]
    base = Path(tempfile.mkdtemp(prefix="dovetail-bench-"))
    base.chmod(0o755)  # the unprivileged workers and Postfix daemons must traverse it
    groups: dict[tuple[Load, str, str], list[Result]] = {}
    failed = False
    try:
        # Every server runs for the whole benchmark (idle, each costs next to nothing) and the
        # measurements are interleaved, so a noisy neighbour on the machine hits all of them alike.
        with ExitStack() as stack:
            servers: list[Server] = []
            if not args.skip_postfix:
                servers.append(stack.enter_context(postfix_server(base, locals_, args.recipients, args.mail_user)))
            if not args.skip_dovetail:
                exes = [(dovetail_executable(args.dovetail), "")]
                if args.baseline:
                    exes.insert(0, (dovetail_executable(args.baseline), "base"))
                nameservers: list[str | None] = [None]
                if args.sender_auth != "off":
                    nameserver = stack.enter_context(sender_zone()).nameserver
                    nameservers = [nameserver] if args.sender_auth == "on" else [None, nameserver]
                directs = {"on": [True], "off": [False], "both": [False, True]}[args.direct]
                for w in args.workers:
                    for ns in nameservers:
                        for direct in directs:
                            for exe, label in exes:
                                servers.append(stack.enter_context(dovetail_server(
                                    exe, base, w, locals_, args.recipients, args.profile, ns, direct, label)))
            for load in loads:
                for server in servers:
                    groups[(load, server.name, server.workers)] = []
            for rnd in range(1, args.rounds + 1):
                for load, local in zip(loads, locals_, strict=True):
                    for server in servers:
                        print(f"round {rnd}: {server.name} (smtpd workers {server.workers}): "
                              f"{load.messages} x {load.label}, {load.sessions} sessions",
                              file=sys.stderr, flush=True)
                        try:
                            result = measure(server, load, local, args.stall)
                        except BenchError as exc:
                            failed = True
                            result = Result(server.name, server.workers, load, error=str(exc))
                            print(f"  failed: {exc}", file=sys.stderr, flush=True)
                        else:
                            print(f"  {result.seconds:.2f} s, {result.rate:.0f} msg/s, "
                                  f"{result.cpu_ms_per_message:.2f} ms CPU/msg, DATA→250 p50 "
                                  f"{1000 * result.p50:.1f} ms p99 {1000 * result.p99:.1f} ms ({result.probed} probed)",
                                  file=sys.stderr, flush=True)
                        groups[(load, server.name, server.workers)].append(result)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    if groups:
        print(table(groups))
    return 1 if failed or not groups else 0


if __name__ == "__main__":
    sys.exit(main())
