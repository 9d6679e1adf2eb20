#!/usr/bin/env python3
"""Dovecot's imaptest stress mode against Dovecot and Dovetail, interleaved in one run.

For each mix (imaptest's default state mix, and a "session" mix of what mail clients do once
connected) and each mailbox size, both servers start with the same INBOX (hard links of one generated
corpus, as ``imap_load.py`` builds it), and imaptest runs ``clients`` connections for ``secs`` seconds
against one user with ``msgs=N`` (it keeps the mailbox near N messages) and state tracking on, so
every reply is checked. Printed per cell: commands/s (the sum of imaptest's per-command totals over the
seconds), server CPU ms per command (the server's whole process tree, from /proc), the ratio
Dovetail ÷ Dovecot, and the errors imaptest reported (must be 0).

imaptest is built from ``tools/imaptest`` when ``--imaptest`` is not given. Run as root with the
Python of a venv that has Dovetail installed, e.g.::

    sudo .venv/bin/python bench/imaptest_compare.py --messages 1000 10000 --secs 30 --rounds 2

Exit status: 0 when no run reported an error, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from imap_load import PASSWORD, dovecot_server, dovetail_server, make_corpus  # noqa: E402
from smtp_throughput import cpu_seconds, cpu_snapshot, dovetail_executable  # noqa: E402

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "imaptest"
MIXES = {
    "default": [],
    "session": ["-", "select=100", "uidf=100", "fetch=100", "fet2=100,30", "search=20", "store=50", "noop=50",
                "logout=0"],
}
# One command of the session mix at a time (after the SELECT every session makes): which command
# costs what, against Dovecot's cost for the same command.
for _command in ("noop=100", "fetch=100", "fet2=100,30", "search=100", "store=100"):
    MIXES[_command.split("=")[0]] = ["-", "select=100", _command, "logout=0"]


@dataclass
class Cell:
    commands: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.commands if self.commands else 0.0


def build_imaptest() -> Path:
    build = Path(tempfile.gettempdir()) / "dovetail-imaptest-bench"
    subprocess.run(["bash", str(TOOLS / "build.sh"), str(build)], check=True, stdout=subprocess.DEVNULL)
    return build / "bin" / "imaptest"


def parse_totals(out: str) -> tuple[int, int]:
    """(commands, errors) of an imaptest stress run: the last counts row under ``Totals:``."""
    lines = out.splitlines()
    commands = 0
    if "Totals:" in lines:
        rows = [ln for ln in lines[lines.index("Totals:") + 1:] if re.fullmatch(r"[\d\s]+", ln.strip() or "x")]
        if rows:
            commands = sum(int(x) for x in rows[-1].split())
    errors = sum(1 for ln in lines if ln.startswith("Error:"))
    return commands, errors


def write_mbox(corpus: Path, dest: Path, limit: int = 500) -> Path:
    """An mbox of corpus messages for imaptest's APPENDs (``mbox=``)."""
    with dest.open("wb") as out:
        for i, path in enumerate(sorted(p for p in corpus.rglob("*") if p.is_file() and "/cur/" in str(p))):
            if i >= limit:
                break
            body = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ")
            # A Message-ID of its own: imaptest tracks messages by it, and an appended copy (one line
            # shorter once through the mbox) under the INBOX original's ID reads as "BODY changed".
            body = re.sub(rb"(?im)^message-id:[^\n]*", b"Message-ID: <append-%d@bench.test>" % i, body, count=1)
            out.write(b"From bench@example.test Thu Jan  1 00:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n")
    return dest


def run_imaptest(imaptest: Path, port: int, user: str, mix: list[str], msgs: int, clients: int, secs: float,
                 root_pid: int, cell: Cell, mbox: Path) -> None:
    before = cpu_snapshot(root_pid)
    start = time.perf_counter()
    out = subprocess.run(
        [str(imaptest), "host=127.0.0.1", f"port={port}", f"user={user}", f"pass={PASSWORD}",
         f"clients={clients}", f"msgs={msgs}", f"secs={int(secs)}", f"mbox={mbox}", "seed=1", *mix],
        capture_output=True, text=True, errors="replace", timeout=secs + 300)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(before, cpu_snapshot(root_pid))
    cell.cpu += cpu
    commands, errors = parse_totals(out.stdout + out.stderr)
    if commands:  # each round's figures, to tell a steady cell from a noisy one
        print(f"    {commands / seconds:.0f} cmd/s, {1000 * cpu / commands:.2f} ms CPU/cmd, {errors} errors",
              file=sys.stderr, flush=True)
    cell.commands += commands
    cell.seconds += seconds
    cell.errors += errors
    cell.samples += [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error:")][:3]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, nargs="+", default=[1000, 10000], help="mailbox sizes (msgs=N)")
    ap.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--secs", type=float, default=30.0, help="seconds per imaptest run")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per cell")
    ap.add_argument("--imaptest", type=Path, help="imaptest binary (default: build tools/imaptest)")
    ap.add_argument("--dovetail", help="dovetail executable (default: next to this Python)")
    ap.add_argument("--baseline", help="another dovetail executable (an earlier build) run interleaved as well, "
                                       "for before/after figures from one window")
    ap.add_argument("--mail-user", default="dovetail", help="non-root uid Dovecot serves mail as")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: run as root", file=sys.stderr)
        return 1
    imaptest = args.imaptest or build_imaptest()
    exe = dovetail_executable(args.dovetail)
    servers = ["Dovecot", "Dovetail"] + (["Baseline"] if args.baseline else [])
    cells: dict[tuple[str, int, str], Cell] = {}
    for msgs in args.messages:
        base = Path(tempfile.mkdtemp(prefix="dovetail-imaptest-"))
        base.chmod(0o755)
        print(f"corpus: {msgs} messages", file=sys.stderr, flush=True)
        make_corpus(base / "corpus", msgs, 1)
        mbox = write_mbox(base / "corpus", base / "append.mbox")
        for mix in args.mixes:
            for rnd in range(args.rounds):
                for name in servers:
                    run_base = base / f"{mix}-{rnd}-{name.lower()}"
                    run_base.mkdir()
                    run_base.chmod(0o755)
                    with ExitStack() as stack:
                        if name != "Dovecot":
                            target = stack.enter_context(dovetail_server(
                                exe if name == "Dovetail" else args.baseline, run_base, base / "corpus", 1, None))
                        else:
                            target = stack.enter_context(
                                dovecot_server(run_base, base / "corpus", 1, args.mail_user, args.clients + 50))
                        cell = cells.setdefault((mix, msgs, name), Cell())
                        print(f"  {mix} mix, {msgs} messages, {name}, round {rnd + 1}", file=sys.stderr, flush=True)
                        run_imaptest(imaptest, target.port, target.users[0], MIXES[mix], msgs, args.clients,
                                     args.secs, target.root_pid, cell, mbox)
    if args.baseline:
        print("| mix | messages | Dovecot cmd/s | Baseline cmd/s | Dovetail cmd/s | baseline ratio | ratio "
              "| Dovecot CPU ms/cmd | Baseline CPU ms/cmd | Dovetail CPU ms/cmd | errors (Dovecot/Baseline/Dovetail) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        print("| mix | messages | Dovecot cmd/s | Dovetail cmd/s | ratio | Dovecot CPU ms/cmd | Dovetail CPU ms/cmd "
              "| errors (Dovecot/Dovetail) |")
        print("|---|---|---|---|---|---|---|---|")
    failed = False
    for mix in args.mixes:
        for msgs in args.messages:
            dc, dt = cells[(mix, msgs, "Dovecot")], cells[(mix, msgs, "Dovetail")]
            ratio = dt.rate / dc.rate if dc.rate else 0.0
            if args.baseline:
                bl = cells[(mix, msgs, "Baseline")]
                bratio = bl.rate / dc.rate if dc.rate else 0.0
                print(f"| {mix} | {msgs} | {dc.rate:.0f} | {bl.rate:.0f} | {dt.rate:.0f} | {bratio:.2f}x "
                      f"| {ratio:.2f}x | {dc.cpu_ms:.2f} | {bl.cpu_ms:.2f} | {dt.cpu_ms:.2f} "
                      f"| {dc.errors}/{bl.errors}/{dt.errors} |")
            else:
                print(f"| {mix} | {msgs} | {dc.rate:.0f} | {dt.rate:.0f} | {ratio:.2f}x | {dc.cpu_ms:.2f} | "
                      f"{dt.cpu_ms:.2f} | {dc.errors}/{dt.errors} |")
            failed = failed or dt.errors > 0
            for s in dt.samples:
                print(f"    Dovetail {s}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
