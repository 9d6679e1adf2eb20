"""Content filtering through ``dovetail serve``, as operators run it: rspamd over HTTP and as a milter, the
tenant's thresholds set with the CLI, and a filter that is down.

Run as root, the workers drop to ``dovetail``; rspamd is the private one of ``tests/rspamd_server.py``.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.master.harness import Master, cli, free_port, wait_for
from tests.rspamd_server import RspamdServer

from .test_rspamd_mx import GTUBE

# the whole server, a CLI process per setting, and perhaps rspamd's first start (its rule compilation)
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when started as root"),
              pytest.mark.timeout(600)]


def _message(subject: str, body: str) -> bytes:
    return (f"From: Alice <alice@sender.test>\r\nTo: bob@acme.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\nDate: Sun, 06 Dec 2026 18:00:00 +0000\r\n"
            f"\r\n{body}\r\n").encode()


def _send(master: Master, msg: bytes) -> tuple[int, bytes]:
    with master.smtp() as s:
        try:
            s.sendmail("alice@sender.test", ["bob@acme.example"], msg)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


def _ok(data_dir: Path, *args: str) -> str:
    out = cli(data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def filtered(tmp_path: Path, rspamd: RspamdServer) -> Iterator[Master]:
    m = Master.create(tmp_path)
    _ok(m.data_dir, "config", "set", f"mx.rspamd_url={rspamd.url}")
    _ok(m.data_dir, "config", "set", f"mx.milters={rspamd.milter}")
    yield m
    m.stop()
    m.cleanup()


def _files(master: Master, folder: str = "") -> list[bytes]:
    box = master.data_dir / "mail" / "acme" / "acme.example" / "bob" / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((box / sub).glob("*")) if p.is_file()]


def test_rspamd_over_http_and_milter_with_tenant_thresholds(filtered: Master) -> None:
    data = filtered.data_dir
    bad = cli(data, "tenant", "set", "acme", "--spam-reject", "lots")
    assert bad.returncode == 2 and "not a score" in bad.stderr and len(bad.stderr.splitlines()) == 1
    _ok(data, "tenant", "set", "acme", "--spam-reject", "14", "--spam-add-header", "-100")
    shown = _ok(data, "tenant", "show", "acme")
    assert "spam reject: 14" in shown and "spam add-header: -100" in shown and "spam greylist: rspamd's" in shown
    filtered.start()

    code, text = _send(filtered, _message("gtube", GTUBE))
    assert code in (550, 554) and text.startswith(b"5.7.1")
    assert _send(filtered, _message("clean note", "See you on Monday at ten."))[0] == 250
    wait_for(lambda: _files(filtered, ".Junk"), 30, "delivery to Junk")
    (junk,) = _files(filtered, ".Junk")
    assert b"X-Spam-Flag: YES" in junk and b"spam=yes (rspamd score=" in junk
    assert b"X-Spamd-Result:" in junk or b"X-Rspamd-Queue-Id:" in junk  # the milter path's own headers
    assert _files(filtered) == []

    _ok(data, "tenant", "set", "acme", "--spam-add-header", "off")
    assert "spam add-header: rspamd's action" in _ok(data, "tenant", "show", "acme")

    def inbox_after_policy_change() -> bool:  # the MX re-reads a tenant's thresholds within seconds
        _send(filtered, _message("second note", "Thanks again."))
        return bool(_files(filtered))

    wait_for(inbox_after_policy_change, 30, "delivery to INBOX")
    assert b"X-Spam-Flag: NO" in _files(filtered)[0]


def test_a_dead_milter_defers_mail_by_default(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    try:
        _ok(m.data_dir, "config", "set", f"mx.milters=inet:127.0.0.1:{free_port()}")
        bad = cli(m.data_dir, "config", "set", "mx.milter_default_action=shrug")
        assert bad.returncode == 2
        m.start()
        code, text = _send(m, _message("hello", "Plain words."))
        assert (code, text[:5]) == (451, b"4.7.1")
        assert _files(m) == []
        assert "default action tempfail" in m.log()
    finally:
        m.stop()
        m.cleanup()
