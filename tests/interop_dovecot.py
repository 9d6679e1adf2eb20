"""A private Dovecot for interop tests: its own config, base_dir and loopback port, passwd-file users.

Use the ``dovecot`` fixture (import it into a test module: ``from tests.interop_dovecot import dovecot``)
or ``DovecotInstance`` directly::

    box = dovecot.add_user("bob@example.com", "secret")   # returns the user's Maildir path
    ... write into box ...
    dovecot.hand_over()                                     # chown everything to the mail uid
    with dovecot.imap("bob@example.com", "secret") as imap: ...

Dovecot refuses mail access as root, so mail is served as the system user ``dovetailtest`` (created
on demand) and everything lives under a world-traversable temporary directory. The fixture skips when
Dovecot is missing, except with CI=true where that is a failure.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require_tool

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
MAIL_USER = "dovetailtest"

CONF = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = {name}-{port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
protocols = imap
listen = 127.0.0.1
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = {max_userip}
{limits}service imap-login {{
{login_limit}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


def dovecot_conf(d: Path, port: int, uid: int, gid: int, *, name: str = "dovetail-interop", max_userip: int = 100,
                 process_limit: int | None = None) -> str:
    """The configuration of a private Dovecot in ``d`` on 127.0.0.1:``port`` serving mail as uid/gid;
    ``process_limit`` raises its process and client limits (the benchmark's 1,000 idle clients)."""
    limits = login_limit = ""
    if process_limit:
        limits = (f"default_process_limit = {process_limit}\ndefault_client_limit = {process_limit * 4}\n"
                  f"service imap {{\n  process_limit = {process_limit}\n}}\n")
        login_limit = f"  process_limit = {process_limit}\n"
    return CONF.format(d=d, port=port, uid=uid, gid=gid, name=name, max_userip=max_userip, limits=limits,
                       login_limit=login_limit)


def mail_user() -> pwd.struct_passwd:
    """The non-root system user Dovecot serves mail as (created with useradd if missing)."""
    try:
        return pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER],
            check=False,
            capture_output=True,
        )
        return pwd.getpwnam(MAIL_USER)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DovecotInstance:
    def __init__(self) -> None:
        self.user = mail_user()
        self.dir = Path(tempfile.mkdtemp(prefix="dovetail-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.port = _free_port()
        self.conf = self.dir / "dovecot.conf"
        self._users: dict[str, str] = {}
        self.running = False

    def home(self, username: str) -> Path:
        return self.dir / "home" / username.replace("/", "_")

    def maildir(self, username: str) -> Path:
        return self.home(username) / "Maildir"

    def add_user(self, username: str, password: str = "secret") -> Path:
        """Add a passwd-file user (Dovecot rereads the file when it changes); returns its Maildir."""
        if any(c in username + password for c in ":\n"):
            raise ValueError("passwd-file fields cannot hold ':' or newlines")
        self._users[username] = password
        for sub in ("cur", "new", "tmp"):
            (self.maildir(username) / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"{u}:{{PLAIN}}{p}::::{self.home(u)}::\n" for u, p in self._users.items()]
        (self.dir / "passwd").write_text("".join(lines))
        self.hand_over()
        return self.maildir(username)

    def hand_over(self) -> None:
        """Give every home and Maildir file to the mail user (call after writing mail as root)."""
        uid, gid = self.user.pw_uid, self.user.pw_gid
        for dirpath, _dirs, filenames in os.walk(self.dir / "home"):
            os.chown(dirpath, uid, gid)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), uid, gid)

    def start(self) -> DovecotInstance:
        (self.dir / "run").mkdir(exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        if not (self.dir / "passwd").exists():
            (self.dir / "passwd").write_text("")
        self.conf.write_text(dovecot_conf(self.dir, self.port, self.user.pw_uid, self.user.pw_gid))
        self.hand_over()
        # The daemon keeps inherited descriptors open, so its output goes to a file, not a pipe.
        with open(self.dir / "start.log", "wb") as out:
            started = subprocess.run([DOVECOT, "-c", str(self.conf)], stdout=out, stderr=out, timeout=30)
        if started.returncode != 0:
            raise RuntimeError("dovecot failed to start: " + (self.dir / "start.log").read_text())
        self.running = True
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)  # the daemon is starting; there is nothing to wait on but its port
        raise RuntimeError("dovecot did not start: " + self.log())

    def imap(self, username: str, password: str | None = None) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(username, password if password is not None else self._users[username])
        return client

    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.running:
            subprocess.run(
                [DOVEADM, "-c", str(self.conf), "stop"],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
            )
            pid_file = self.dir / "run" / "master.pid"
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[DovecotInstance]:
    """A running private Dovecot; add users with ``add_user`` (before or after start)."""
    require_tool(DOVECOT, DOVEADM)
    if os.geteuid() != 0:
        pytest.skip("the Dovecot fixture needs root to run Dovecot as a separate mail uid")
    instance = DovecotInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
