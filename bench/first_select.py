#!/usr/bin/env python3
"""The first SELECT of a fresh Maildir, Dovecot against Dovetail, and imapd memory at start.

Both servers get the same INBOX (hard links of one generated corpus of ``--messages`` messages, named
with ``,S=``/``,W=`` as Dovecot and Dovetail name the files they write) that neither has seen yet;
one client logs in and times ``SELECT INBOX`` (and the server's CPU time for it, from
``/proc``, at the kernel's 10 ms resolution), then ``FETCH 1:* (FLAGS)``, then the same again on a
second connection (warm). Each round starts both servers afresh. Also printed: the RSS and PSS of
the server's IMAP processes after start (Dovetail: the imapd workers; Dovecot: the whole tree), and
what each idle connection adds (``--idle`` logged-in connections).

Run as root with the Python of a venv that has Dovetail installed, e.g.::

    sudo .venv/bin/python bench/first_select.py --messages 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from imap_load import PASSWORD, dovecot_server, dovetail_server, make_corpus, process_tree  # noqa: E402
from smtp_throughput import dovetail_executable  # noqa: E402


def _exchange(sock: socket.socket, tag: bytes, line: bytes) -> bytes:
    sock.sendall(tag + b" " + line + b"\r\n")
    buf = b""
    while not any(ln.startswith(tag + b" ") for ln in buf.split(b"\r\n")):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def login(port: int, user: str, source: str | None = None) -> socket.socket:
    """A logged-in connection; ``source`` binds it to another loopback address (connections per IP
    are limited)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=300,
                                    source_address=(source, 0) if source else None)
    sock.recv(4096)
    reply = _exchange(sock, b"a", b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    if b"a OK" not in reply:
        raise RuntimeError(f"login failed: {reply[-200:]!r}")
    return sock


def timed(sock: socket.socket, tag: bytes, line: bytes) -> float:
    start = time.perf_counter()
    reply = _exchange(sock, tag, line)
    if tag + b" OK" not in reply:
        raise RuntimeError(f"{line!r} failed: {reply[-200:]!r}")
    return time.perf_counter() - start


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KB summed over ``pids``."""
    rss = pss = 0
    for pid in pids:
        try:
            for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if ln.startswith("Rss:"):
                    rss += int(ln.split()[1])
                elif ln.startswith("Pss:"):
                    pss += int(ln.split()[1])
        except FileNotFoundError:
            continue
    return rss, pss


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (from /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def imap_pids(name: str, root_pid: int, run_base: Path) -> list[int]:
    """Dovecot: its whole process tree; Dovetail: the imapd workers its master logged starting."""
    if name == "Dovecot":
        return process_tree(root_pid)
    log = (run_base / "dovetail.log").read_text(errors="replace")
    return [int(m) for m in re.findall(r"service=imapd, pid=(\d+)", log)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=200, help="idle logged-in connections for the per-connection figure")
    ap.add_argument("--dovetail", help="dovetail executable (default: next to this Python)")
    ap.add_argument("--mail-user", default="dovetail", help="non-root uid Dovecot serves mail as")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: run as root", file=sys.stderr)
        return 1
    exe = dovetail_executable(args.dovetail)
    base = Path(tempfile.mkdtemp(prefix="dovetail-first-select-"))
    base.chmod(0o755)
    make_corpus(base / "corpus", args.messages, 1)
    rows = []
    for rnd in range(args.rounds):
        for name in ("Dovecot", "Dovetail"):
            run_base = base / f"{rnd}-{name.lower()}"
            run_base.mkdir()
            run_base.chmod(0o755)
            with ExitStack() as stack:
                if name == "Dovetail":
                    target = stack.enter_context(dovetail_server(exe, run_base, base / "corpus", 1, None))
                else:
                    target = stack.enter_context(dovecot_server(run_base, base / "corpus", 1, args.mail_user,
                                                                args.idle + 50))
                time.sleep(1.0)  # let the workers finish starting
                pids = imap_pids(name, target.root_pid, run_base)
                start_mem = memory_kb(pids)
                sock = login(target.port, target.users[0])
                served_by = imap_pids(name, target.root_pid, run_base)
                cpu_before = cpu_seconds(served_by)
                first = timed(sock, b"s1", b"SELECT INBOX")
                first_cpu = cpu_seconds(served_by) - cpu_before
                fetch = timed(sock, b"f1", b"FETCH 1:* (FLAGS)")
                sock.close()
                sock = login(target.port, target.users[0])
                warm = timed(sock, b"s2", b"SELECT INBOX")
                sock.close()
                before = memory_kb(imap_pids(name, target.root_pid, run_base))
                idle = [login(target.port, target.users[0], f"127.0.{1 + i // 250}.{1 + i % 250}")
                        for i in range(args.idle)]
                after = memory_kb(imap_pids(name, target.root_pid, run_base))
                for s in idle:
                    s.close()
                per_conn = (after[1] - before[1]) / max(1, args.idle)
                rows.append((rnd + 1, name, first, first_cpu, fetch, warm, start_mem[0] / 1024, start_mem[1] / 1024,
                             per_conn))
                print(f"  round {rnd + 1} {name}: first SELECT {first:.3f} s", file=sys.stderr, flush=True)
    print("| round | server | first SELECT s | its server CPU s | FETCH 1:* (FLAGS) s | warm SELECT s "
          "| IMAP RSS MB at start | IMAP PSS MB at start | PSS KB per idle connection |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rnd, name, first, first_cpu, fetch, warm, rss, pss, per_conn in rows:
        print(f"| {rnd} | {name} | {first:.3f} | {first_cpu:.2f} | {fetch:.3f} | {warm:.3f} | {rss:.0f} | {pss:.0f} "
              f"| {per_conn:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
