"""The master process for real: forked workers on loopback ports, signals, restarts, privileges."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import smtplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Master, cli, wait_for

MSG = "From: alice@ext.example\r\nTo: bob@acme.example\r\nSubject: {subject}\r\n\r\n{body}\r\n"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master.create(tmp_path)
    m.start()
    yield m
    m.stop()
    m.cleanup()


def subjects(m: Master) -> list[str]:
    out = []
    for path in m.maildir_files():
        for line in path.read_bytes().split(b"\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode().strip())
                break
    return out


def test_smtp_to_maildir_end_to_end(master: Master) -> None:
    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="e2e", body="hello"))
    wait_for(lambda: subjects(master) == ["e2e"], 20, "delivery")
    text = master.maildir_files()[0].read_text()
    assert text.startswith("Return-Path: <alice@ext.example>\nDelivered-To: bob@acme.example\n")
    assert "by mx.test.example" in text  # our Received: header


def test_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(master: Master) -> None:
    old_pids = set(master.worker_pids("smtpd"))  # one per CPU: the session is on one of them
    assert old_pids
    acknowledged = []
    s = master.smtp()
    s.ehlo()
    for i in range(10):
        s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject=f"before-{i}", body="x"))
        acknowledged.append(f"before-{i}")
    assert s.mail("alice@ext.example")[0] == 250
    assert s.rcpt("bob@acme.example")[0] == 250
    for old_pid in old_pids:
        os.kill(old_pid, signal.SIGKILL)  # mid-transaction
    with pytest.raises((smtplib.SMTPException, OSError)):
        s.data(MSG.format(subject="in-flight", body="x"))
    wait_for(lambda: (len(master.worker_pids("smtpd")) == len(old_pids)
                      and not old_pids & set(master.worker_pids("smtpd"))), 20, "restart")
    wait_for(master.smtp_banner_ok, 20, "new sessions accepted")
    with master.smtp() as s2:
        s2.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="after", body="x"))
    acknowledged.append("after")
    wait_for(lambda: set(acknowledged) <= set(subjects(master)), 30, "all acknowledged messages delivered")
    got = subjects(master)
    assert len(got) == len(set(got)), "a message was delivered twice"
    assert "worker died" in master.log() and all(f"pid={p}" in master.log() for p in old_pids)


def test_a_service_that_cannot_start_stops_serve_with_its_reason(tmp_path: Path) -> None:
    """No restart loop behind "daemon started": the first worker's failure ends serve, exit 1, with why."""
    m = Master.create(tmp_path)
    # Another queue manager holds the queue lock: our qmgr cannot start.
    lock_path = m.data_dir / "queue" / "pid" / "qmgr.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        out = cli(m.data_dir, "serve", "--smtp", f"127.0.0.1:{m.smtp_port}", "--imap", f"127.0.0.1:{m.imap_port}",
                  "--submission", "", "--http", "")
        assert out.returncode == 1, out.stderr
        refused = [line for line in out.stderr.splitlines() if "service cannot start" in line]
        assert len(refused) == 1 and "qmgr" in refused[0] and "a queue manager already runs" in refused[0]
        assert "daemon started" not in out.stderr
        assert "worker died" not in out.stderr  # not restarted
    finally:
        os.close(fd)
        m.cleanup()


def test_crash_looping_service_is_throttled_while_others_serve(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    m.start()
    lock_path = m.data_dir / "queue" / "pid" / "qmgr.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        # Once qmgr served, another queue manager takes the queue lock as soon as ours die: every
        # restart fails. The lock is waited for before the kill, so it is ours before the restart.
        taken = threading.Event()
        waiter = threading.Thread(target=lambda: (fcntl.flock(fd, fcntl.LOCK_EX), taken.set()), daemon=True)
        waiter.start()
        for qmgr in m.worker_pids("qmgr"):  # one queue manager per shard of the queue
            os.kill(qmgr, signal.SIGKILL)
        assert taken.wait(20), "the queue lock was not released by the killed queue manager"
        try:
            wait_for(lambda: m.status().get("services", {}).get("qmgr", {}).get("throttled"), 60, "throttling")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {m.log()[-3000:]}") from None
        assert "crash-looping, throttled" in m.log()
        assert m.proc is not None and m.proc.poll() is None  # the master keeps serving
        wait_for(m.smtp_banner_ok, 20, "smtpd serving")
        with m.smtp() as s:
            # all-local mail is committed by smtpd itself: it reaches the Maildir with qmgr down
            s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="direct", body="x"))
            # a success notice is the queue manager's work: accepted and durable, waiting for qmgr
            s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="queued", body="x"),
                       rcpt_options=["NOTIFY=SUCCESS"])
        assert len(m.maildir_files()) == 1
        assert any((m.data_dir / "queue" / "incoming").iterdir())
    finally:
        os.close(fd)
        m.stop()
        m.cleanup()


def test_sighup_applies_a_new_limit_without_refusing_connections(master: Master) -> None:
    old_pids = set(master.worker_pids("smtpd"))
    failures: list[Exception] = []
    done = threading.Event()
    connections = 0

    def hammer() -> None:
        nonlocal connections
        while not done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", master.smtp_port), timeout=10) as c:
                    banner = c.recv(200)
                    if not banner.startswith(b"220"):
                        raise AssertionError(banner)
                    connections += 1
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        assert cli(master.data_dir, "config", "set", "smtp.max_message_size=1K").returncode == 0
        assert cli(master.data_dir, "reload").returncode == 0
        wait_for(lambda: (len(master.worker_pids("smtpd")) == len(old_pids)
                          and not old_pids & set(master.worker_pids("smtpd"))), 20, "new smtpd workers")
        wait_for(lambda: not old_pids & _children(master), 30, "old workers retired")
    finally:
        done.set()
        thread.join()
    assert failures == [] and connections > 0
    assert master.worker_pids("qmgr") and "changed=smtpd" in master.log().replace("'", "")
    with master.smtp() as s:
        with pytest.raises(smtplib.SMTPException) as exc:
            s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="big", body="x" * 4000))
    assert "552" in str(exc.value)


def _children(m: Master) -> set[int]:
    assert m.proc is not None
    try:
        text = Path(f"/proc/{m.proc.pid}/task/{m.proc.pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(p) for p in text.split()}


def test_sigterm_lets_a_data_transfer_finish(master: Master) -> None:
    s = master.smtp()
    s.ehlo()
    assert s.mail("alice@ext.example")[0] == 250
    assert s.rcpt("bob@acme.example")[0] == 250
    code, _ = s.docmd("DATA")
    assert code == 354
    s.send(b"From: alice@ext.example\r\nSubject: drained\r\n\r\nfirst half\r\n")
    master.signal(signal.SIGTERM)
    wait_for(lambda: "stopping: draining" in master.log(), 10, "drain started")
    s.send(b"second half\r\n.\r\n")
    code, reply = s.getreply()
    assert code == 250, reply
    s.close()
    assert master.proc is not None
    assert master.proc.wait(timeout=40) == 0
    queued = list((master.data_dir / "queue" / "incoming").iterdir())
    assert "drained" in subjects(master) or queued, "the accepted message is neither delivered nor queued"
    wait_for(lambda: not (master.data_dir / "run" / "master.pid").exists(), 5, "pid file removed")


def test_second_master_on_the_same_data_dir_refuses(master: Master) -> None:
    out = cli(master.data_dir, "serve", "--smtp", "127.0.0.1:1", "--imap", "", "--submission", "", "--http", "")
    assert out.returncode == 2
    assert "another master" in out.stderr and str(master.proc.pid) in out.stderr  # type: ignore[union-attr]


def test_status_reload_and_stop_cli(master: Master) -> None:
    import json

    out = cli(master.data_dir, "status", "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["running"] and st["pid"] == master.proc.pid  # type: ignore[union-attr]
    assert st["services"]["smtpd"]["workers"][0]["pid"] == master.worker_pids("smtpd")[0]
    assert len(master.worker_pids("smtpd")) == min(os.cpu_count() or 1, 8)  # one per CPU by default
    assert set(st["queue"]) == {"incoming", "active", "deferred", "hold", "corrupt"}
    shown = cli(master.data_dir, "status").stdout
    assert re.search(r"^dovetail master pid \d+, up \d+(s|m\d\ds|h\d\dm|d\d\dh)$", shown, re.M), shown
    assert st["warnings"] == []  # server.hostname is mx.test.example
    assert "server.hostname" not in master.log()
    stopped = cli(master.data_dir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert master.proc.wait(timeout=5) == 0  # type: ignore[union-attr]
    assert cli(master.data_dir, "status").returncode == 1


def test_a_hostname_without_a_dot_is_warned_about_at_start_and_in_status(tmp_path: Path) -> None:
    import json

    from dovetail import config

    m = Master.create(tmp_path)
    config.set_value(m.data_dir, "server.hostname", "localhost")
    try:
        m.start()
        warned = [line for line in m.log().splitlines() if "server.hostname 'localhost'" in line]
        assert len(warned) == 1, m.log()
        assert "warning" in warned[0].lower() and "dovetail config set server.hostname=mail.example.com" in warned[0]
        with m.smtp() as s:  # what the warning is about: the greeting uses it
            assert s.ehlo()[1].split(b"\n")[0] == b"localhost"
        st = json.loads(cli(m.data_dir, "status", "--json").stdout)
        assert len(st["warnings"]) == 1 and "loopback" in st["warnings"][0]
        text = cli(m.data_dir, "status").stdout
        assert "warning: server.hostname 'localhost' is a loopback name" in text
    finally:
        m.stop()
        m.cleanup()


def test_bad_config_on_reload_keeps_running(master: Master) -> None:
    path = master.data_dir / "dovetail.toml"
    path.write_text(path.read_text() + "\n[services.smtpd]\nworkers = 0\n")
    out = cli(master.data_dir, "reload")
    assert out.returncode == 0  # the file itself parses; the master refuses the service table
    wait_for(lambda: "reload refused" in master.log(), 10, "refusal logged")
    assert "services.smtpd.workers" in master.log()
    assert master.smtp_banner_ok()


def test_several_smtp_workers_share_the_socket(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    with (m.data_dir / "dovetail.toml").open("a") as fh:
        fh.write("\n[services.smtpd]\nworkers = 2\n")
    m.start()
    try:
        assert len(m.worker_pids("smtpd")) == 2
        out = cli(m.data_dir, "config", "show", "--all")
        assert "services.smtpd.workers = 2" in out.stdout
    finally:
        m.stop()
        m.cleanup()


def test_on_demand_service_exits_when_idle_and_starts_on_connection(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    with (m.data_dir / "dovetail.toml").open("a") as fh:
        fh.write('\n[services.smtpd]\nmax_idle = "1s"\n')
    m.start()
    try:
        wait_for(lambda: all(w["idle"] for w in m.status()["services"]["smtpd"]["workers"]), 20,
                 "smtpd idle exit")
        assert not m.worker_pids("smtpd")
        with socket.create_connection(("127.0.0.1", m.smtp_port), timeout=20) as c:
            assert c.recv(200).startswith(b"220")
        assert "starting on-demand service, service=smtpd" in m.log()
        assert m.log().count("worker started, service=smtpd") >= 2
    finally:
        m.stop()
        m.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_workers_run_as_the_unprivileged_user(master: Master) -> None:
    import pwd

    uid = pwd.getpwnam("dovetail").pw_uid
    for service in ("smtpd", "imapd", "qmgr"):
        for pid in master.worker_pids(service):
            status = Path(f"/proc/{pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1:] == [str(uid)] * 4, (service, uid_line)
    master_status = Path(f"/proc/{master.proc.pid}/status").read_text()  # type: ignore[union-attr]
    assert "Uid:\t0\t" in master_status
    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["bob@acme.example"], MSG.format(subject="owned", body="x"))
    wait_for(master.maildir_files, 20, "delivery")
    assert master.maildir_files()[0].stat().st_uid == uid


def test_readiness_and_stopping_are_notified_to_systemd(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    path = m.data_dir.parent / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    try:
        m.start(env={"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
        m.signal(signal.SIGTERM)
        assert sock.recv(100) == b"STOPPING=1"
        assert m.proc is not None and m.proc.wait(timeout=40) == 0
    finally:
        sock.close()
        m.stop()
        m.cleanup()


def test_a_busy_port_is_a_clear_error(master: Master, tmp_path: Path) -> None:
    """A second data directory asking for a port in use: one line naming the address, exit 2."""
    _second_server_is_refused(tmp_path, "--smtp", master.smtp_port)


def _second_server_is_refused(tmp_path: Path, flag: str, port: int) -> None:
    """``dovetail serve`` of another data directory asking for ``port`` (with ``flag``): one line, exit 2."""
    second = tmp_path / "second"
    second.mkdir()
    other = Master.create(second)
    listens = {"--smtp": "", "--imap": "", "--submission": "", "--http": "", flag: f"127.0.0.1:{port}"}
    try:
        out = cli(other.data_dir, "serve", *[x for pair in listens.items() for x in pair])
        assert out.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    finally:
        other.cleanup()


def _sockets_on(pid: int, port: int, state: str) -> set[str]:
    """The inodes of TCP sockets on local ``port`` in ``state`` (01 established, 0A listening) that
    process ``pid`` holds (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                held.add(link[8:-1])
    return held


def test_imap_workers_each_take_a_share_of_a_burst_of_logins(tmp_path: Path) -> None:
    """imapd workers listen on a socket each (SO_REUSEPORT): a burst of connections is spread over both
    instead of landing on whichever worker woke first; a second server cannot join the port's group."""
    m = Master.create(tmp_path)
    with (m.data_dir / "dovetail.toml").open("a") as fh:
        fh.write("\n[services.imapd]\nworkers = 2\n")
    m.start()
    clients: list[socket.socket] = []
    try:
        pids = m.worker_pids("imapd")
        assert len(pids) == 2
        for _ in range(40):  # a burst, as a client pool or a restart of the clients makes
            clients.append(socket.create_connection(("127.0.0.1", m.imap_port), timeout=20))
        assert all(c.recv(200).startswith(b"* OK") for c in clients)
        listening = [_sockets_on(pid, m.imap_port, "0A") for pid in pids]
        assert all(len(held) == 1 for held in listening) and listening[0] != listening[1]  # a socket each
        shares = [len(_sockets_on(pid, m.imap_port, "01")) for pid in pids]
        assert sum(shares) == 40
        assert min(shares) >= 5, shares  # an even hash gives 20 each; 5 or fewer has odds below 1e-5
        _second_server_is_refused(tmp_path, "--imap", m.imap_port)
        # A reload with another worker count keeps the group (the retiring workers still hold it) and
        # gives the new worker a socket of its own in it.
        for c in clients:
            c.close()
        clients.clear()
        config = m.data_dir / "dovetail.toml"
        config.write_text(config.read_text().replace("imapd]\nworkers = 2\n", "imapd]\nworkers = 3\n"))
        assert cli(m.data_dir, "reload").returncode == 0
        wait_for(lambda: len(set(m.worker_pids("imapd")) - set(pids)) == 3, 30, "three new imapd workers")
        wait_for(lambda: not set(pids) & _children(m), 30, "old imapd workers retired")
        listening = [_sockets_on(pid, m.imap_port, "0A") for pid in m.worker_pids("imapd")]
        assert all(len(held) == 1 for held in listening) and len(set().union(*listening)) == 3
        assert "service cannot listen" not in m.log()
        with socket.create_connection(("127.0.0.1", m.imap_port), timeout=20) as c:
            assert c.recv(200).startswith(b"* OK")
    finally:
        for c in clients:
            c.close()
        m.stop()
        m.cleanup()


def test_workers_die_with_a_master_killed_outright(tmp_path: Path) -> None:
    """SIGKILL gives the master no chance to stop its workers: the kernel's parent-death signal does,
    also for workers that dropped root (the kernel clears that signal when the user changes)."""
    m = Master.create(tmp_path)
    m.start()
    try:
        assert m.proc is not None
        workers = _children(m)
        assert len(workers) >= 4  # smtpd, imapd, qmgr and the rest
        if os.geteuid() == 0:
            uid = Path(f"/proc/{min(workers)}/status").read_text().split("Uid:")[1].split()[0]
            assert uid != "0"  # the case that matters: workers that dropped root
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=10)

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers)

        wait_for(gone, 10, "the workers of the killed master to exit")
    finally:
        m.stop()
        m.cleanup()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
