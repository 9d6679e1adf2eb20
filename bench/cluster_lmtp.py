#!/usr/bin/env python3
"""SMTP through an MX node to a mailbox node over LMTP, against direct single-node delivery.

Both setups use one throwaway PostgreSQL (``initdb``/``pg_ctl`` of the machine, as the ``postgres`` user
when run as root) as the directory, so the comparison is about the extra hop, not the database:

- **direct**: one ``dovetail serve`` node, no ``node.name``: its queue manager delivers into its Maildir;
- **cluster**: node ``a`` (role mx) takes the mail and its queue manager hands each recipient to node
  ``b`` (role mailbox, the tenant's home) over LMTP; ``b``'s lmtpd commits into its Maildir, then answers.

Postfix's ``smtp-source`` pushes M messages of a given size over S sessions to the node that takes the
mail; the clock runs from its start until the last message is a file in the home node's Maildir
(``new/``, counted by polling). Rounds alternate direct and cluster so both see the same machine.

On a shared machine msg/s swings with the neighbours' load; the CPU each node's processes (the master
and its workers, utime + stime from ``/proc``) spent per message is the steadier figure, printed beside
it, less what the nodes burn while idle (measured for ``--idle-window`` seconds before each push).
``--baseline TREE`` adds a cluster run of another checkout (its ``src`` first on ``PYTHONPATH``),
interleaved with this one's in every round; ``--pyspy DIR`` records every worker of both cluster nodes
with py-spy during the first cluster round (``bench/pyspy_top.py`` summarises the files).

The set-up is written out here rather than imported from the test suite (benchmarks do not import
tests): a data directory per node, made with the ``dovetail`` CLI as an operator would.

Run with the interpreter of the environment Dovetail is installed in, e.g.
``.venv/bin/python bench/cluster_lmtp.py --messages 1000 --sessions 10 --size 2048 --rounds 2``.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOVETAIL = str(Path(sys.executable).parent / "dovetail")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answers 220 on port {port}")


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found (PostgreSQL server binaries)")
    return candidates[-1]


@contextmanager
def postgresql() -> Iterator[str]:
    """A throwaway PostgreSQL; yields the URL of a fresh database."""
    base = Path(tempfile.mkdtemp(prefix="dovetail-bench-pg-"))
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    run(pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=300"
    run(pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def new_database(url: str) -> str:
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def cli(data: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([DOVETAIL, "--data-dir", str(data), *args], capture_output=True, text=True, timeout=300,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"dovetail {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


class Node:
    """One ``dovetail serve`` with its own data directory (readable by the service user)."""

    def __init__(self, base: Path, name: str, url: str, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.data = base / name
        self.data.mkdir()
        self.smtp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        cli(self.data, "init")
        cli(self.data, "config", "set", f"database.url={url}", "server.hostname=mx.bench.example",
            "queue.minimal_backoff=1s")

    def start(self) -> None:
        self.log = open(self.data / "master.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [DOVETAIL, "--data-dir", str(self.data), "serve", "--smtp", f"127.0.0.1:{self.smtp_port}",
             "--imap", "", "--submission", "", "--http", ""], stdout=self.log, stderr=subprocess.STDOUT,
            env=self.env)
        wait_banner(self.smtp_port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()

    def new_dir(self) -> Path:
        return self.data / "mail" / "acme" / "acme.example" / "bob" / "new"


    def pids(self) -> list[int]:
        """The master and every process under it."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def cpu(self) -> float:
        """CPU seconds (user + system) the node's processes used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / tick


def populate(node: Node, home: str | None = None) -> None:
    cli(node.data, "tenant", "add", "acme", *(["--node", home] if home else []))
    cli(node.data, "domain", "add", "acme.example", "--tenant", "acme")
    cli(node.data, "mailbox", "add", "bob@acme.example", "--password", "bench-secret")


def count(folder: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(folder))
    except FileNotFoundError:
        return 0


def push(port: int, folder: Path, args: argparse.Namespace, nodes: list[Node]) -> tuple[float, list[float]]:
    """Messages per second from smtp-source's start to the last file in ``folder``, and the milliseconds
    of CPU per message each of ``nodes`` spent meanwhile."""
    before = count(folder)
    idle_from = [node.cpu() for node in nodes]
    time.sleep(args.idle_window)  # what the nodes burn doing nothing (timers, pollers) is not the mail's
    idle = [(node.cpu() - was) / args.idle_window for node, was in zip(nodes, idle_from, strict=True)]
    cpu = [node.cpu() for node in nodes]
    started = time.monotonic()
    source = subprocess.Popen([SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages),
                               "-l", str(args.size), "-f", "bench@sender.example", "-t", "bob@acme.example",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = before + args.messages
    last_seen, last_change = before, time.monotonic()
    while (n := count(folder)) < target:
        if n != last_seen:
            last_seen, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > args.stall:
            source.kill()
            raise RuntimeError(f"stalled at {n - before}/{args.messages} messages")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    spent = [max(0.0, node.cpu() - was - rate * elapsed) * 1000 / args.messages
             for node, was, rate in zip(nodes, cpu, idle, strict=True)]
    source.wait(timeout=60)
    return args.messages / elapsed, spent


def direct(pg: str, base: Path, args: argparse.Namespace, env: dict[str, str] | None = None
           ) -> tuple[float, list[float]]:
    node = Node(base, "single", new_database(pg))
    populate(node)
    node.start()
    try:
        return push(node.smtp_port, node.new_dir(), args, [node])
    finally:
        node.stop()


def record(nodes: list[Node], folder: Path, seconds: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker of ``nodes`` (raw files ``NODE-PID.txt`` in ``folder``)."""
    pyspy = str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in nodes:
        for pid in node.pids():
            out = folder / f"{node.data.name}-{pid}.txt"
            procs.append(subprocess.Popen([pyspy, "record", "-r", "200", "-f", "raw", "-o", str(out), "--pid",
                                           str(pid), "--duration", str(seconds)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)  # py-spy attaches
    return procs


def cluster(pg: str, base: Path, args: argparse.Namespace, env: dict[str, str] | None = None
            ) -> tuple[float, list[float]]:
    url = new_database(pg)
    lmtp = free_port()
    a, b = Node(base, "a", url, env), Node(base, "b", url, env)
    cli(a.data, "config", "set", "node.name=a")
    cli(b.data, "config", "set", "node.name=b", f"listen.lmtp=127.0.0.1:{lmtp}")
    # The cluster's master key, given to both nodes (secrets/master.key), as an operator copies it.
    cli(a.data, "node", "add", "a", "--roles", "mx")
    cli(a.data, "node", "add", "b", "--roles", "mailbox", "--lmtp", f"127.0.0.1:{lmtp}")
    populate(a, home="b")
    master = a.data / "secrets" / "master.key"
    if master.exists():
        shutil.copy2(master, b.data / "secrets" / "master.key")
    b.start()
    wait_banner(lmtp)
    a.start()
    spies = record([a, b], Path(args.pyspy), args.pyspy_seconds) if args.pyspy else []
    args.pyspy = ""  # the first round only
    try:
        return push(a.smtp_port, b.new_dir(), args, [a, b])
    finally:
        for spy in spies:
            spy.wait()
        a.stop()
        b.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stall", type=float, default=60.0, help="give up after this long with no delivery")
    parser.add_argument("--baseline", default="", help="another checkout: its cluster run interleaved with ours")
    parser.add_argument("--no-direct", action="store_true", help="skip the single-node runs")
    parser.add_argument("--pyspy", default="", help="folder for py-spy recordings of the first cluster round")
    parser.add_argument("--pyspy-seconds", type=int, default=20)
    parser.add_argument("--idle-window", type=float, default=2.0,
                        help="seconds of idle CPU measured before each push and subtracted from its CPU")
    args = parser.parse_args(argv)
    if not os.path.exists(SMTP_SOURCE):
        print(f"{SMTP_SOURCE} is missing (Debian's postfix package)", file=sys.stderr)
        return 2
    runs: list[tuple[str, object, dict[str, str] | None]] = []
    if not args.no_direct:
        runs.append(("direct", direct, None))
    if args.baseline:
        src = str(Path(args.baseline).resolve() / "src")
        runs.append(("cluster-baseline", cluster, {**os.environ, "PYTHONPATH": src}))
    runs.append(("cluster", cluster, None))
    results: dict[str, list[tuple[float, list[float]]]] = {mode: [] for mode, _, _ in runs}
    with ExitStack() as stack:
        pg = stack.enter_context(postgresql())
        for _ in range(args.rounds):
            for mode, fn, env in runs:
                base = Path(tempfile.mkdtemp(prefix=f"dovetail-bench-{mode}-"))
                base.chmod(0o755)
                try:
                    rate, cpu = fn(pg, base, args, env)  # type: ignore[operator]
                finally:
                    shutil.rmtree(base, ignore_errors=True)
                results[mode].append((rate, cpu))
                per_node = " + ".join(f"{c:.2f}" for c in cpu)
                print(f"{mode}: {rate:.0f} msg/s, CPU ms/msg {per_node} = {sum(cpu):.2f}", flush=True)
    first = runs[0][0]
    best = {mode: max(r for r, _ in rounds) for mode, rounds in results.items()}
    print(f"\n{args.messages} messages x {args.size} B over {args.sessions} sessions, best of {args.rounds}:")
    print(f"| setup | msg/s (best) | all rounds | vs {first} | CPU ms/msg per node (median) | CPU ms/msg total |")
    print("|---|---|---|---|---|---|")
    for mode, rounds in results.items():
        rates = ", ".join(f"{r:.0f}" for r, _ in rounds)
        cpus = sorted(rounds, key=lambda rc: sum(rc[1]))[len(rounds) // 2][1]
        per_node = " + ".join(f"{c:.2f}" for c in cpus)
        print(f"| {mode} | {best[mode]:.0f} | {rates} | {best[mode] / best[first]:.2f}x | {per_node} "
              f"| {sum(cpus):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
