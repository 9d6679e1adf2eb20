"""The MX as a whole (master, smtpd, queue, qmgr, delivery) driven by real clients."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support import require_swaks_tls, require_tool
from .harness import Master, wait_for


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master.create(tmp_path)
    m.start()
    yield m
    m.stop()
    m.cleanup()


def test_log_tells_the_story_of_a_message_by_queue_id(master: Master) -> None:
    with master.smtp() as s:
        s.ehlo("client.example")
        code, text = s.mail("alice@ext.example")
        assert code == 250
        s.rcpt("bob@acme.example")
        code, text = s.data(b"Subject: story\r\n\r\nbody\r\n")
    assert code == 250
    qid = re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()
    wait_for(lambda: f"{qid}: removed" in master.log(), 20, "delivery and removal")
    story = [line for line in master.log().splitlines() if f"{qid}:" in line]
    joined = "\n".join(story)
    assert "client=" in joined
    assert "from=<alice@ext.example>" in joined
    assert "to=<bob@acme.example>" in joined and "status=sent" in joined
    assert story[-1].endswith(f"{qid}: removed")
    delivered = master.maildir_files()[0].read_text()
    assert f"id {qid}" in delivered  # the Received: header carries the queue id


def test_smtp_source_burst(master: Master) -> None:
    require_tool("/usr/sbin/smtp-source")
    out = subprocess.run(["/usr/sbin/smtp-source", "-m", "200", "-s", "10", "-l", "2048", "-f", "alice@ext.example",
                          "-t", "bob@acme.example", f"127.0.0.1:{master.smtp_port}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(master.maildir_files()) == 200, 60, "200 deliveries")


def test_swaks_session_with_starttls(master: Master) -> None:
    require_swaks_tls()
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{master.smtp_port}", "--from", "alice@ext.example",
                          "--to", "bob@acme.example", "--tls", "--header", "Subject: via-swaks"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    wait_for(lambda: any("via-swaks" in p.read_text() for p in master.maildir_files()), 20, "delivery")
    text = next(p for p in master.maildir_files() if "via-swaks" in p.read_text()).read_text()
    assert "with ESMTPS" in text  # TLS recorded in the Received: header


def test_kill_minus_9_of_the_whole_server_during_a_burst_loses_nothing(master: Master) -> None:
    """Every message acknowledged with 250 before the crash is delivered exactly once after restart.

    With ``mx.direct_delivery`` (the default) smtpd commits these messages into the Maildir itself before
    its 250; the queue's own crash safety is tested in tests/queue/test_queue_crash.py."""
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"burst-{n}-{i}"
            try:
                with smtplib.SMTP("127.0.0.1", master.smtp_port, timeout=10) as s:
                    s.sendmail("alice@ext.example", ["bob@acme.example"], f"Subject: {subject}\r\n\r\nx\r\n")
            except (smtplib.SMTPException, OSError):
                return
            with lock:
                acknowledged.append(subject)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acknowledged) >= 40, 60, "burst under way")
    assert master.proc is not None
    children = Path(f"/proc/{master.proc.pid}/task/{master.proc.pid}/children").read_text().split()
    os.kill(master.proc.pid, signal.SIGKILL)
    for pid in children:  # workers die with the master (parent-death signal); make it certain and immediate
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    master.proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    master.start()
    wanted = set(acknowledged)

    def delivered() -> list[str]:
        subjects = []
        for path in master.maildir_files():
            m = re.search(r"^Subject: (\S+)$", path.read_text(errors="replace"), re.M)
            if m:
                subjects.append(m.group(1))
        return subjects

    wait_for(lambda: wanted <= set(delivered()), 60, "every acknowledged message delivered")
    got = delivered()
    dupes = {s for s in got if got.count(s) > 1}
    assert not dupes, f"delivered twice: {sorted(dupes)[:5]}"
    # smtpd delivered them itself (dovetail/virtual), not the queue manager (dovetail/qmgr)
    assert "dovetail/virtual[" in master.log() and "relay=virtual" not in "".join(
        line for line in master.log().splitlines(keepends=True) if "dovetail/qmgr[" in line)


def test_mail_flow_counters_reach_the_dashboard_table(master: Master) -> None:
    import sqlalchemy as sa

    from dovetail import config
    from dovetail.db import make_engine

    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["bob@acme.example"], "Subject: counted\r\n\r\nx\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("alice@ext.example", ["ghost@acme.example"], "Subject: refused\r\n\r\nx\r\n")
    wait_for(master.maildir_files, 20, "delivery")
    engine = make_engine(config.load(master.data_dir).database_url)

    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT counter, SUM(n) FROM mail_counters GROUP BY counter"))
            return {name: int(n) for name, n in rows}

    wait_for(lambda: {"received": 1, "delivered": 1, "rejected": 1}.items() <= counts().items(), 30,
             "counters flushed by the smtpd and qmgr workers")


def test_smtp_delivery_is_read_over_imap_with_directory_logins(master: Master) -> None:
    import imaplib

    from imapclient import IMAPClient

    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["bob@acme.example"], "Subject: over imap\r\n\r\nhello imap\r\n")
    wait_for(master.maildir_files, 20, "delivery")
    bad = imaplib.IMAP4("127.0.0.1", master.imap_port)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        bad.login("bob@acme.example", "wrong")
    bad.logout()
    with IMAPClient("127.0.0.1", port=master.imap_port, ssl=False, timeout=30) as client:
        client.login("BOB@acme.example", "secret")
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
        uid = client.search("ALL")[0]
        data = client.fetch([uid], ["ENVELOPE", "BODY[TEXT]"])[uid]
        assert data[b"ENVELOPE"].subject == b"over imap"
        assert data[b"BODY[TEXT]"] == b"hello imap\r\n"
        assert {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"} <= {f[2].encode() for f in client.list_folders()}
        client.idle()
        with master.smtp() as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"], "Subject: pushed\r\n\r\nx\r\n")
        responses = client.idle_check(timeout=10)
        client.idle_done()
        assert (2, b"EXISTS") in responses
