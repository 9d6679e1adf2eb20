"""SORT and THREAD against a real Dovecot: the same mailbox, the same answers.

The mailbox is a deterministic random corpus (reply trees with missing parents, duplicate and absent
Message-IDs, In-Reply-To only, Re:/Fwd:/[blob]/(fwd) subjects, encoded words, odd dates and time
zones), appended to Dovecot with explicit internal dates and evaluated here from the same bytes.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dovetail.imap.search import SearchContext, evaluate_messages, parse_search
from dovetail.imap.sort import format_sort, parse_sort, sort_messages
from dovetail.imap.thread import format_thread_list, thread
from tests.imap.test_search_corpus import Msg
from tests.support import require_tool

pytestmark = pytest.mark.interop

SUBJECTS = ["hello", "Hello", "status report", "=?utf-8?q?caf=C3=A9?=", "[list] news", "budget", "", "x",
            "=?iso-8859-1?q?=E9t=E9?=", "a_b", "aB"]
PREFIXES = ["", "", "Re: ", "RE: ", "Fwd: ", "Re: Re: ", "[list] Re: ", "Re[2]: ", "FW: "]
NAMES = ["", "Alice Smith", "bob", "=?utf-8?q?=C3=89mile?=", '"Zed, Z."', "carol"]
LOCALS = ["alice", "Bob", "carol", "dave", "eve", "zed", "a.b", "Émile"]
ZONES = ["+0000", "-0500", "+0930", "+1400", "-1200"]


def corpus(seed: int, count: int) -> list[bytes]:
    rnd = random.Random(seed)
    out: list[bytes] = []
    ids: list[str] = []
    base = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    for i in range(count):
        h = []
        subject = rnd.choice(PREFIXES) + rnd.choice(SUBJECTS) + rnd.choice(["", "", " (fwd)", "  "])
        if rnd.random() < 0.1:
            subject = "[Fwd: " + subject + "]"
        if rnd.random() > 0.05:
            h.append(f"Subject: {subject}")
        for field in ("From", "To", "Cc"):
            if rnd.random() < (0.95 if field != "Cc" else 0.5):
                local = rnd.choice(LOCALS)
                addr = f"{local}@{rnd.choice(['example.org', 'b.example'])}"
                name = rnd.choice(NAMES)
                h.append(f"{field}: {name} <{addr}>" if name else f"{field}: {addr}")
        r = rnd.random()
        when = base + dt.timedelta(minutes=rnd.randrange(0, 5000))
        if r < 0.08:
            pass
        elif r < 0.12:
            h.append("Date: not a date")
        else:
            zone = rnd.choice(ZONES)
            sign = 1 if zone[0] == "+" else -1
            local_time = when + sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:]))
            h.append("Date: " + local_time.strftime("%a, %d %b %Y %H:%M:%S ") + zone)
        mid = None
        r = rnd.random()
        if r < 0.07 and ids:
            mid = rnd.choice(ids)  # duplicate
        elif r < 0.12:
            mid = None
        else:
            mid = f"m{i}.{seed}@example.org"
        if mid:
            h.append(f"Message-ID: <{mid}>")
            ids.append(mid)
        r = rnd.random()
        pool = ids[:-1] + [f"ghost{k}@example.org" for k in range(5)]
        if r < 0.45 and pool:
            chain = rnd.sample(pool, k=min(len(pool), rnd.randint(1, 4)))
            h.append("References: " + " ".join(f"<{c}>" for c in chain))
        elif r < 0.6 and pool:
            h.append(f"In-Reply-To: <{rnd.choice(pool)}> (comment)")
        h.append("MIME-Version: 1.0")
        h.append("Content-Type: text/plain; charset=utf-8")
        body = f"body {i}\r\n" + "x" * rnd.randrange(0, 400)
        out.append(("\r\n".join(h) + "\r\n\r\n" + body + "\r\n").encode("utf-8"))
    return out


CONF = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = dovetail-sortthread-{port}
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
protocols = imap
listen = 127.0.0.1
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
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
"""


class PrivateDovecot:
    """A throwaway Dovecot on a loopback port serving one empty Maildir as a non-root user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dovetail-sortthread-"))
        os.chmod(self.dir, 0o755)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = self.dir / "dovecot.conf"

    def start(self) -> PrivateDovecot:
        user = pwd.getpwnam("nobody")
        for sub in ("run", "state", "home", "Maildir/cur", "Maildir/new", "Maildir/tmp"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "passwd").write_text(f"u:{{PLAIN}}secret::::{self.dir}/home::\n")
        self.conf.write_text(CONF.format(d=self.dir, port=self.port, uid=user.pw_uid, gid=user.pw_gid))
        for sub in ("home", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"):
            os.chown(self.dir / sub, user.pw_uid, user.pw_gid)
        # the daemon keeps inherited descriptors: no pipes, or run() would wait for it forever
        subprocess.run(["/usr/sbin/dovecot", "-c", str(self.conf)], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("dovecot did not start")

    def stop(self) -> None:
        subprocess.run(["/usr/bin/doveadm", "-c", str(self.conf), "stop"], check=False, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file = self.dir / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dovecot_box():
    require_tool("/usr/sbin/dovecot")
    if os.geteuid() != 0:
        pytest.skip("needs root to run Dovecot as a mail user")
    server = PrivateDovecot().start()
    try:
        raws = corpus(5256, 120)
        rnd = random.Random(1)
        conn = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
        conn.login("u", "secret")
        msgs = []
        for seq, raw in enumerate(raws, 1):
            internal = dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rnd.randrange(0, 3000))
            typ, _ = conn.append("INBOX", "", imaplib.Time2Internaldate(internal.timestamp()), raw)
            assert typ == "OK"
            msgs.append(Msg(raw, seq, seq, internal_date=internal))
        conn.select("INBOX")
        yield conn, msgs
        conn.logout()
    finally:
        server.stop()


SORTS = ["ARRIVAL", "DATE", "SIZE", "SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO",
         "REVERSE DATE", "SUBJECT DATE", "REVERSE SUBJECT REVERSE ARRIVAL", "FROM REVERSE SIZE", "CC TO"]


@pytest.mark.parametrize("criteria", SORTS)
def test_sort_matches_dovecot(dovecot_box, criteria) -> None:
    conn, msgs = dovecot_box
    typ, data = conn.sort(f"({criteria})", "UTF-8", "ALL")
    assert typ == "OK"
    theirs = data[0].decode().split()
    req = parse_sort([criteria.split(), "UTF-8", "ALL"])
    ours = [str(m.seq) for m in sort_messages(req.criteria, evaluate_messages(req.key, msgs))]
    assert ours == theirs
    assert format_sort(int(n) for n in ours) == "* SORT " + data[0].decode()


def test_sort_with_search_keys_matches_dovecot(dovecot_box) -> None:
    conn, msgs = dovecot_box
    typ, data = conn.sort("(SUBJECT)", "UTF-8", "OR", "FROM", "alice", "SUBJECT", '"re"')
    assert typ == "OK"
    req = parse_sort([["SUBJECT"], "UTF-8", "OR", "FROM", b"alice", "SUBJECT", b"re"])
    ours = [str(m.seq) for m in sort_messages(req.criteria, evaluate_messages(req.key, msgs))]
    assert ours == data[0].decode().split()


@pytest.mark.parametrize("algorithm", ["REFERENCES", "ORDEREDSUBJECT"])
def test_thread_matches_dovecot(dovecot_box, algorithm) -> None:
    conn, msgs = dovecot_box
    typ, data = conn.thread(algorithm, "UTF-8", "ALL")
    assert typ == "OK"
    assert format_thread_list(thread(algorithm, msgs)) == data[0].decode()


@pytest.mark.parametrize("keys", [
    ["SUBJECT", "hello"], ["FROM", "alice"], ["TO", "b.example"], ["HEADER", "Message-ID", "example.org"],
    ["SENTSINCE", "3-May-2024"], ["SENTBEFORE", "3-May-2024"], ["SENTON", "2-May-2024"],
    ["SINCE", "2-May-2024"], ["BODY", "x" * 300], ["TEXT", "caf\u00e9"], ["LARGER", "400"],
    ["NOT", "SUBJECT", "re"], ["OR", "CC", "zed", "SUBJECT", "news"],
])
def test_search_matches_dovecot(dovecot_box, keys) -> None:
    conn, msgs = dovecot_box
    wire = [k if k.isascii() and (k.isalnum() or "-" in k and k[0].isdigit()) else '"' + k + '"'
            for k in keys]
    if not keys[-1].isascii():  # 8-bit text goes as a literal, which imaplib sends last
        conn.literal = keys[-1].encode()
        typ, data = conn.search("UTF-8", *[w.encode() for w in wire[:-1]])
    else:
        typ, data = conn.search("UTF-8", *[w.encode() for w in wire])
    assert typ == "OK"
    args = [k.encode() if w.startswith('"') else k for k, w in zip(keys, wire, strict=True)]
    req = parse_search(["CHARSET", "UTF-8", *args])
    ours = [m.seq for m in evaluate_messages(req.key, msgs, SearchContext())]
    theirs = [int(n) for n in data[0].split()]
    assert ours == theirs, sorted((n, n in ours, msgs[n - 1].header("date")) for n in set(ours) ^ set(theirs))
