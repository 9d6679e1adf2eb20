"""Rate limits and greylisting through the whole server, as operators run it: two smtpd workers share
one connection allowance per client (the run/ file), and a greylisted triplet passes once it is older
than the delay, whichever worker answers the retry."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail import config

from .harness import Master, cli, wait_for


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master.create(tmp_path)
    config.set_value(m.data_dir, "mx.sender_auth", "no")
    config.set_value(m.data_dir, "mx.rate.exempt", "")  # the test's clients are on loopback
    config.set_value(m.data_dir, "mx.rate.connections_per_ip", "4")
    config.set_value(m.data_dir, "mx.greylist.exempt", "")
    with (m.data_dir / config.CONFIG_NAME).open("a") as fh:
        fh.write("\n[services.smtpd]\nworkers = 2\n")
    assert cli(m.data_dir, "tenant", "set", "acme", "--greylist", "on").returncode == 0
    m.start()
    yield m
    m.stop()
    m.cleanup()


def banner(port: int, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
        return s.makefile("rb").readline()


def transaction(port: int, source: str) -> list[bytes]:
    """Banner, EHLO, MAIL, RCPT (and DATA when accepted): the first line of each reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
        f = s.makefile("rb")

        def reply() -> bytes:
            first = f.readline()
            line = first
            while line[3:4] == b"-":
                line = f.readline()
            return first[:3] + line[3:].rstrip()

        out = [reply()]
        for cmd in (b"EHLO client.test", b"MAIL FROM:<news@sender.test>", b"RCPT TO:<bob@acme.example>"):
            s.sendall(cmd + b"\r\n")
            out.append(reply())
        if out[-1].startswith(b"250"):
            s.sendall(b"DATA\r\n")
            out.append(reply())
            s.sendall(b"Subject: greylisted\r\n\r\nhello\r\n.\r\n")
            out.append(reply())
        s.sendall(b"QUIT\r\n")
        return out


def test_rate_limit_shared_by_workers_and_greylisting_end_to_end(master: Master) -> None:
    m = master
    wait_for(lambda: len(m.worker_pids("smtpd")) == 2, 30, "two smtpd workers")
    first = [banner(m.smtp_port, "127.0.40.1")[:3] for _ in range(6)]
    assert first == [b"220"] * 4 + [b"421"] * 2
    assert banner(m.smtp_port, "127.0.41.1").startswith(b"220")  # another network
    wait_for(lambda: "Connection rate limit exceeded" in m.log(), 10, "the refusal logged")
    assert "from 127.0.40.1 (client 127.0.40.1) for service mx, limit 4/min" in m.log()

    replies = transaction(m.smtp_port, "127.0.42.1")
    assert replies[-1] == b"451 4.7.1 Greylisted, try again in 300 seconds"
    with sqlite3.connect(m.data_dir / "dovetail.db") as db:  # five minutes later
        db.execute("UPDATE greylist SET first_seen = first_seen - 301")
    replies = transaction(m.smtp_port, "127.0.42.9")  # the sender's pool retries from a neighbour
    assert replies[3] == b"250 2.1.5 Ok" and replies[-1].startswith(b"250 2.0.0 Ok: queued as")
    wait_for(lambda: m.maildir_files(), 30, "delivery")
    out = cli(m.data_dir, "greylist", "list", "--json")
    assert out.returncode == 0, out.stderr
    (triplet,) = json.loads(out.stdout)["triplets"]
    assert (triplet["network"], triplet["status"]) == ("127.0.42.0/24", "passed")
