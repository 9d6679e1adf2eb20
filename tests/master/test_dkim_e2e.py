"""DKIM keys made by root are the service user's: mail is signed, or deferred until it can be, never unsigned.

A real master as root: workers drop to ``dovetail``; the CLI runs as root beside it, as an operator does.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from .harness import Master, RelaySink, cli, relay_everything_to, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when started as root")



@pytest.fixture
def master(tmp_path: Path, sink: tuple[RelaySink, int]) -> Iterator[Master]:
    m = Master.create(tmp_path)
    relay_everything_to(m, sink[1])
    assert cli(m.data_dir, "alias", "add", "fwd@acme.example", "partner@remote.example").returncode == 0
    m.start()
    yield m
    m.stop()
    m.cleanup()


def ok(data_dir: Path, *args: str) -> str:
    out = cli(data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def send_from(master: Master, domain: str) -> None:
    """A message From ``domain`` through the MX to an alias that forwards it out through the relay."""
    msg = (f"From: News <news@{domain}>\r\nTo: fwd@acme.example\r\nSubject: from {domain}\r\n"
           f"Message-ID: <m1@{domain}>\r\n\r\nhello\r\n")
    with master.smtp() as s:
        s.sendmail(f"news@{domain}", ["fwd@acme.example"], msg)


def assert_signed(data: bytes, master: Master, domain: str) -> None:
    """Both signatures (RSA, Ed25519) verify with dkimpy against the keys ``dkim list`` publishes."""
    records = {f"{k['record']}.": k["txt"].encode()
               for k in json.loads(ok(master.data_dir, "dkim", "list", domain, "--json"))}

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        return records.get(name.decode() if isinstance(name, bytes) else name)

    assert data.count(b"DKIM-Signature:") == 2 and f"d={domain}".encode() in data
    for i in range(2):
        assert dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc)


def key_files(master: Master, domain: str) -> list[Path]:
    return sorted((master.data_dir / "dkim" / domain).glob("*.key"))


def test_keys_added_by_root_while_serving_sign_the_mail(master: Master, sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    ok(master.data_dir, "domain", "add", "beta.example", "--tenant", "acme")  # root, after the workers dropped
    service = pwd.getpwnam("dovetail").pw_uid
    assert [(p.stat().st_uid, p.stat().st_mode & 0o777) for p in key_files(master, "beta.example")] \
        == [(service, 0o600)] * 2
    assert "unreadable" not in ok(master.data_dir, "dkim", "list", "beta.example")
    send_from(master, "beta.example")
    wait_for(lambda: handler.messages, 30, "relayed message")
    assert_signed(handler.messages[0][2], master, "beta.example")


def test_an_unreadable_key_defers_the_mail_until_serve_repairs_it(master: Master,
                                                                  sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    ok(master.data_dir, "domain", "add", "gamma.example", "--tenant", "acme")
    broken = key_files(master, "gamma.example")[0]
    os.chown(broken, 0, 0)  # root's, 0600, after the fact: the workers cannot read it
    send_from(master, "gamma.example")
    deferred = wait_for(lambda: re.search(r".*dsn=4\.7\.0.*status=deferred \(DKIM key for gamma\.example "
                                          r"unreadable: [^)]*\)\)?", master.log()), 30, "deferral line")
    assert f"{broken}: Permission denied" in deferred.group(0)
    assert handler.messages == []  # deferred, not sent unsigned
    assert "(unreadable:" in ok(master.data_dir, "dkim", "list", "gamma.example")
    listed = {k["selector"]: k for k in json.loads(ok(master.data_dir, "dkim", "list", "gamma.example", "--json"))}
    assert listed[broken.stem]["problem"] == f"{broken}: Permission denied (owner root, mode 0600)"
    status = ok(master.data_dir, "status")
    assert f"dkim: gamma.example {broken.stem} active (unreadable: " in status
    assert json.loads(ok(master.data_dir, "status", "--json"))["dkim_unreadable"][0]["selector"] == broken.stem

    master.stop()  # a restart gives the key back to the service user, and the mail goes, signed
    master.start()
    assert f"DKIM key store: {broken}: owner root -> dovetail; repaired" in master.log()
    assert "unreadable" not in ok(master.data_dir, "dkim", "list", "gamma.example")
    ok(master.data_dir, "queue", "flush")
    wait_for(lambda: handler.messages, 30, "relayed message")
    assert_signed(handler.messages[0][2], master, "gamma.example")
