"""A private Postfix (Debian's package) on a loopback port, delivering with virtual(8) into Maildirs.

Used by interop tests: Dovetail must serve what Postfix's virtual(8) delivered. The instance has its
own queue and data directories and ``smtp_dns_support_level = disabled``, so nothing leaves the box.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .support import require_tool

POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
virtual    unix  - n n -     - virtual
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

# A private instance on loopback: its own queue and data directories, no DNS, no chroot, a log file.
BASE_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = interop-postfix.localdomain
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
"""

# ...delivering to virtual(8) Maildirs (the interop tests and the SMTP benchmark).
MAIN_CF = BASE_CF + """\
virtual_mailbox_domains = {domains}
virtual_mailbox_maps = hash:{root}/etc/vmailbox
virtual_mailbox_base = {base}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostfixInstance:
    """``mailboxes`` maps an address to its Maildir path relative to ``base`` (ending in ``/``)."""

    def __init__(self, base: Path, mailboxes: dict[str, str], mail_user: str) -> None:
        require_tool(POSTFIX, POSTMAP)
        self.root = Path(tempfile.mkdtemp(prefix="dovetail-postfix-"))
        self.root.chmod(0o755)  # the postfix user must reach data/
        self.port = _free_port()
        etc = self.root / "etc"
        etc.mkdir()
        (self.root / "queue").mkdir()
        (self.root / "data").mkdir()
        owner = pwd.getpwnam("postfix")
        os.chown(self.root / "data", owner.pw_uid, owner.pw_gid)
        pw = pwd.getpwnam(mail_user)
        domains = sorted({a.rpartition("@")[2] for a in mailboxes})
        (etc / "main.cf").write_text(MAIN_CF.format(root=self.root, base=base, domains=", ".join(domains),
                                                    uid=pw.pw_uid, gid=pw.pw_gid))
        (etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (etc / "vmailbox").write_text("".join(f"{a} {p}\n" for a, p in mailboxes.items()))
        subprocess.run([POSTMAP, "-c", str(etc), f"hash:{etc}/vmailbox"], check=True, capture_output=True)
        self.cmd = [POSTFIX, "-c", str(etc)]

    def start(self) -> None:
        subprocess.run([*self.cmd, "start"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("private Postfix did not answer")

    def stop(self) -> None:
        subprocess.run([*self.cmd, "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
