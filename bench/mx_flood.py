#!/usr/bin/env python3
"""A connection flood against the MX, and a legitimate sender that must still get through.

Starts ``dovetail --data-dir DIR serve`` from a fresh data directory with the default settings (only the
listen address is chosen, the services other than smtpd and qmgr are disabled), then:

- **flood**: ``--connections`` sockets (default 10,000) from ``--addresses`` loopback source addresses
  (default 1,000, four per /24 in 127.20.0.0/14: source addresses are bound before connecting). Half of
  the clients sit idle after the banner, half trickle a command one byte every few seconds (a
  slowloris). A client whose connection the server closes (or refuses) connects again after
  ``--reconnect`` seconds, so the flood keeps its pressure for the whole run.
- **legitimate sender**: once the flood is up, every second for ``--duration`` seconds a new
  connection from 127.0.0.1 sends one message (EHLO, MAIL, RCPT, DATA) to a real mailbox; it counts
  as a success when ``250`` arrives within 5 s of the connect.

It prints the success rate and the p50/p99 latency of the legitimate sender, how many flood connections
the MX held, and the memory of the smtpd worker processes (RSS before the flood and while it is held,
from ``/proc``): KB per idle connection is the growth divided by the connections held.

Run as root with the Python of the environment Dovetail is installed in (a venv on /usr/bin/python3:
the workers drop to the ``dovetail`` user and must be able to read it). RLIMIT_NOFILE is raised to its
hard limit for this process and the server it starts. Exit status: 0 when every legitimate message
got its 250 within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
DOMAIN = "flood.test"
DEADLINE = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flood_address(i: int) -> str:
    """Four addresses per /24, spread over 127.20.0.0/14 (the legitimate sender is 127.0.0.1)."""
    net = i // 4
    return f"127.{20 + net // 250}.{net % 250}.{i % 4 + 1}"


def rss_kb(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE // 1024


def smtpd_pids(data: Path) -> list[int]:
    try:
        status = json.loads((data / "run" / "status.json").read_text())
    except (OSError, ValueError):
        return []
    return [w["pid"] for w in status["services"]["smtpd"]["workers"] if w.get("pid")]


def smtpd_connections(data: Path) -> int:
    total = 0
    for path in (data / "run" / "stats").glob("smtpd.*.json"):
        try:
            total += int(json.loads(path.read_text()).get("connections", 0))
        except (OSError, ValueError):
            pass
    return total


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --------------------------------------------------------------------------- the server


def start_server(exe: str, base: Path, settings: list[str]) -> tuple[subprocess.Popen[bytes], Path, int]:
    data = base / "data"
    dt = [exe, "--data-dir", str(data)]
    for args in (["init"], ["tenant", "add", "bench"], ["domain", "add", DOMAIN, "--tenant", "bench"],
                 ["mailbox", "add", f"rcpt@{DOMAIN}", "--password", "bench-password-1"],
                 ["config", "set", "server.shutdown_grace=5s"], *(["config", "set", kv] for kv in settings)):
        subprocess.run([*dt, *args], check=True, capture_output=True)
    port = free_port()
    with (data / "dovetail.toml").open("a") as f:
        f.write(f'\n[services.smtpd]\nlisten = ["127.0.0.1:{port}"]\n')
        for name in ("submission", "imapd", "web", "replies"):
            f.write(f"\n[services.{name}]\nenabled = false\n")
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen([*dt, "serve"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dovetail serve exited: {(base / 'serve.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(100).startswith(b"220") and smtpd_pids(data):
                    return proc, data, port
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("dovetail serve did not start within 60 s")


# --------------------------------------------------------------------------- the flood


@dataclass
class FloodStats:
    opened: int = 0
    refused: int = 0  # 421 as the first reply
    closed_by_server: int = 0
    connect_errors: int = 0
    holding: int = 0


async def flood_client(source: str, trickle: bool, port: int, stats: FloodStats, stop: asyncio.Event,
                       sem: asyncio.Semaphore, reconnect: tuple[float, float]) -> None:
    """Connect, read the first reply, then sit idle (or trickle a never-ending command); again when closed."""
    while not stop.is_set():
        writer = None
        try:
            async with sem:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10)
                first = await asyncio.wait_for(reader.readline(), 30)
            stats.opened += 1
            if not first.startswith(b"220"):
                stats.refused += 1
            else:
                stats.holding += 1
                try:
                    while not stop.is_set():
                        if trickle:
                            writer.write(b"N")  # one byte every few seconds of a command that never ends
                            await writer.drain()
                        try:
                            chunk = await asyncio.wait_for(reader.read(512), random.uniform(3, 6))
                        except TimeoutError:
                            continue
                        if not chunk or b"421" in chunk:
                            break
                finally:
                    stats.holding -= 1
                if not stop.is_set():
                    stats.closed_by_server += 1
        except (OSError, TimeoutError):
            stats.connect_errors += 1
        finally:
            if writer is not None:
                writer.close()
        if not stop.is_set():
            await asyncio.sleep(random.uniform(*reconnect))


async def run_flood(port: int, addresses: int, per_address: int, stats: FloodStats, stop: asyncio.Event,
                    reconnect: tuple[float, float]) -> None:
    sem = asyncio.Semaphore(256)  # connects in flight at once
    tasks = [asyncio.create_task(flood_client(flood_address(a), k % 2 == 1, port, stats, stop, sem, reconnect))
             for k in range(per_address) for a in range(addresses)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the legitimate sender


@dataclass
class Legit:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def send_one(port: int) -> tuple[float, str | None]:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
            f = s.makefile("rb")

            def reply() -> bytes:
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("closed")
                    if line[3:4] != b"-":
                        return line

            banner = reply()
            if not banner.startswith(b"220"):
                return time.monotonic() - started, f"banner {banner[:60]!r}"
            s.sendall(b"EHLO legit.test\r\n")
            reply()
            s.sendall(f"MAIL FROM:<sender@legit.test>\r\nRCPT TO:<rcpt@{DOMAIN}>\r\nDATA\r\n".encode())
            answers = [reply() for _ in range(3)]
            if not answers[2].startswith(b"354"):
                return time.monotonic() - started, f"answers {answers!r}"
            s.sendall(b"Subject: still here\r\n\r\nA message through the flood.\r\n.\r\n")
            final = reply()
            elapsed = time.monotonic() - started
            s.sendall(b"QUIT\r\n")
            if not final.startswith(b"250"):
                return elapsed, f"final {final[:80]!r}"
            return elapsed, None if elapsed <= DEADLINE else f"250 after {elapsed:.2f}s"
    except (OSError, ConnectionError) as exc:
        return time.monotonic() - started, f"{exc.__class__.__name__}: {exc}"


def legit_sender(port: int, duration: float, legit: Legit) -> None:
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < duration:
        elapsed, error = send_one(port)
        legit.latencies.append(elapsed)
        if error:
            legit.failures.append(f"#{k}: {error}")
        k += 1
        wait = start + k - time.monotonic()
        if wait > 0:
            time.sleep(wait)


# --------------------------------------------------------------------------- main


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--addresses", type=int, default=1_000)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds the legitimate sender runs")
    ap.add_argument("--ramp", type=float, default=20.0, help="longest wait for the flood to be up first")
    ap.add_argument("--reconnect", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"),
                    help="a flood client connects again after this many seconds")
    ap.add_argument("--dovetail", default=str(Path(sys.executable).parent / "dovetail"))
    ap.add_argument("--keep", action="store_true", help="keep the data directory and log")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting other than the default (e.g. mx.stress_threshold=0: stress mode off)")
    args = ap.parse_args()
    if args.connections < args.addresses:
        raise SystemExit("--connections must be at least --addresses")
    per_address = max(1, args.connections // args.addresses)
    nofile = raise_nofile()
    if nofile < args.connections + 1000:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {nofile} is below {args.connections + 1000}")
    base = Path(tempfile.mkdtemp(prefix="dovetail-flood-"))
    base.chmod(0o755)
    proc, data, port = start_server(args.dovetail, base, args.set)
    try:
        pids = smtpd_pids(data)
        rss_before = sum(rss_kb(p) for p in pids)
        stats = FloodStats()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        reconnect = (args.reconnect[0], args.reconnect[1])

        def flood_thread() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(run_flood(port, args.addresses, per_address, stats, stop, reconnect))

        thread = threading.Thread(target=flood_thread, daemon=True)
        thread.start()
        ramp_end = time.monotonic() + args.ramp
        while time.monotonic() < ramp_end and stats.opened < args.connections:
            time.sleep(0.2)
        held_at_start = smtpd_connections(data)
        print(f"flood up: {stats.opened} connections opened, {stats.refused} refused with 421, "
              f"{held_at_start} held by smtpd", flush=True)
        legit = Legit()
        legit_sender(port, args.duration, legit)
        held = smtpd_connections(data)
        rss_during = sum(rss_kb(p) for p in smtpd_pids(data))
        load = os.getloadavg()
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        total = len(legit.latencies)
        ok = total - len(legit.failures)
        log = (data / "log" / "dovetail.log").read_text(errors="replace")
        print()
        print(f"flood: {args.addresses} addresses x {per_address} = {args.addresses * per_address} clients; "
              f"{stats.opened} connections opened, {stats.refused} refused with 421 at connect, "
              f"{stats.closed_by_server} closed by the server, {stats.connect_errors} connect errors")
        print(f"smtpd held {held} connections at the end; stress mode entered {log.count('stress mode on')} times, "
              f"{log.count('to make room')} idle connections closed to make room")
        print(f"legitimate sender: {ok}/{total} got 250 within {DEADLINE:g}s ({100 * ok / max(1, total):.1f} %), "
              f"p50 {statistics.median(legit.latencies) * 1000:.0f} ms, "
              f"p99 {percentile(legit.latencies, 99) * 1000:.0f} ms, max {max(legit.latencies) * 1000:.0f} ms")
        per_conn = (rss_during - rss_before) / held if held else 0.0
        print(f"smtpd RSS: {rss_before / 1024:.1f} MB before, {rss_during / 1024:.1f} MB with the flood held: "
              f"{per_conn:.1f} KB per idle connection")
        print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        for failure in legit.failures[:10]:
            print(f"  failed {failure}")
        return 0 if not legit.failures else 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    sys.exit(main())
