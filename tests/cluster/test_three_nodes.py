"""Three ``dovetail serve`` nodes on 127.0.0.2-4 sharing one throwaway PostgreSQL: the cluster as an
operator runs it (as root, so the workers drop privileges).

Node ``a`` is an MX and submission node, ``b`` the mailbox node tenant ``acme`` is homed on, ``c`` a front
for IMAP. One cluster serves the whole module (starting three masters is the expensive part); the test
that kills ``b`` runs last.
"""

from __future__ import annotations

import email
import json
import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dovetail import config
from dovetail.db import make_engine
from dovetail.directory import Directory
from dovetail.directory.nodes import NodeStore
from dovetail.mailauth import proxytoken
from dovetail.mailauth.passwords import hash_password

from ..master.harness import (
    DOVETAIL,
    Master,
    cli,
    relay_everything_to,
    relay_sink,
    share_master_key,
    wait_for,
)
from ..replies.receiver import Receiver

HOSTS = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
SECRET = "cluster-secret-for-the-three-nodes"

pytestmark = pytest.mark.timeout(900)


def host_port(host: str) -> int:
    """A free port on ``host`` below Linux's ephemeral range (32768-60999): the nodes are told their ports
    long before they bind them, and an ephemeral port may meanwhile be taken by any outgoing connection."""
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port


class Node(Master):
    """A master bound to its own loopback address, in its own process group (so kill -9 takes all of it)."""

    name = ""
    host = ""

    def place(self, name: str, host: str) -> Node:
        self.name, self.host = name, host
        self.smtp_port, self.imap_port, self.submission_port, self.lmtp_port = (host_port(host) for _ in range(4))
        return self

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.logfile = open(self.log_path, "ab")  # noqa: SIM115
        h = self.host
        self.proc = subprocess.Popen(
            [*DOVETAIL, "--data-dir", str(self.data_dir), "serve", "--smtp", f"{h}:{self.smtp_port}",
             "--imap", f"{h}:{self.imap_port}", "--submission", f"{h}:{self.submission_port}", "--http", "",
             "--lmtp", f"{h}:{self.lmtp_port}", *extra],
            stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(120)

    def smtp_banner_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.smtp_port), timeout=2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP(self.host, self.smtp_port, timeout=60)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.logfile.close()

    def queued(self) -> int:
        """Messages in this node's queue, in any state."""
        queue = self.data_dir / "queue"
        states = ("incoming", "active", "deferred", "hold")
        return sum(1 for sub in states for p in (queue / sub).rglob("*") if p.is_file())

    def message_ids(self) -> Counter[str]:
        """Message-IDs in bob's Maildir on this node, counted."""
        ids: Counter[str] = Counter()
        for path in self.maildir_files():
            with path.open("rb") as fh:
                ids[str(email.message_from_binary_file(fh).get("Message-ID", "")).strip()] += 1
        return ids


@dataclass
class Cluster:
    a: Node
    b: Node
    c: Node
    relay: object


class Imap:
    """A line-level IMAP client to a node (imaplib has no IDLE)."""

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=60,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self.buf[:200]!r}")
            self.buf += chunk
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def cmd(self, text: str) -> list[bytes]:
        tag = text.split(" ", 1)[0].encode()
        self.sock.sendall(text.encode() + b"\r\n")
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(tag + b" "):
                return lines

    def close(self) -> None:
        self.sock.close()


def _send(node: Node, mid: str, extra: str = "", sender: str = "alice@ext.example") -> None:
    with node.smtp() as s:
        s.sendmail(sender, ["bob@acme.example"],
                   f"From: {sender}\r\nTo: bob@acme.example\r\nSubject: {mid}\r\nMessage-ID: <{mid}>\r\n"
                   f"{extra}\r\nbody of {mid}\r\n")


@pytest.fixture(scope="module")
def cluster(pg_cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    root = tmp_path_factory.mktemp("cluster")
    nodes: dict[str, Node] = {}
    for name, host in HOSTS.items():
        (root / name).mkdir()
        nodes[name] = Node.create(root / name, database_url=url, populate=False).place(name, host)  # type: ignore[attr-defined]
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    for node in nodes.values():
        for key, value in (("node.name", node.name), ("cluster.secret", SECRET), ("queue.maximal_backoff", "2s"),
                           ("replies.webhook_allow_private", "true")):
            config.set_value(node.data_dir, key, value)
    # The one secret an operator hands every node: the master key the cluster's sealed keys (DKIM, the
    # credentials key that opens webhook signing secrets, reply-token and SRS keys) are kept under.
    share_master_key(*nodes.values())
    engine = make_engine(url)
    store = NodeStore(engine)
    store.add("a", "mx,replies,submission", imap=f"{a.host}:{a.imap_port}")
    store.add("b", "mailbox,replies", lmtp=f"{b.host}:{b.lmtp_port}", imap=f"{b.host}:{b.imap_port}")
    store.add("c", "mx,replies", imap=f"{c.host}:{c.imap_port}")
    # A misconfigured node: its IMAP address is c's own, so c would proxy its tenants to itself.
    store.add("ghost", "mailbox", lmtp="127.0.0.9:24", imap=f"{c.host}:{c.imap_port}")
    directory = Directory(engine)
    homed = (("acme", "b", "acme.example", "bob"), ("loopy", "ghost", "loopy.example", "lou"))
    for tenant, home, domain, user in homed:
        directory.tenant_add(tenant, node=home)
        directory.domain_add(domain, tenant)
        directory.mailbox_add(f"{user}@{domain}", hash_password("secret"))
    engine.dispose()
    with relay_sink() as (relay, relay_port):
        relay_everything_to(a, relay_port)
        started: list[Node] = []
        try:
            for node in (b, a, c):
                node.start()
                started.append(node)
            yield Cluster(a, b, c, relay)
        finally:
            for node in started:
                node.stop()
            for node in nodes.values():
                node.cleanup()


def test_the_nodes_have_their_own_loopback_addresses(cluster: Cluster) -> None:
    for node in (cluster.a, cluster.b, cluster.c):
        with socket.create_connection((node.host, node.imap_port), timeout=10) as s:
            assert s.getpeername()[0] == node.host


def test_mail_taken_by_a_lands_in_the_maildir_of_b(cluster: Cluster) -> None:
    _send(cluster.a, "first@ext.example")
    wait_for(lambda: cluster.b.message_ids()["<first@ext.example>"] == 1, 120, "delivery to b over LMTP")
    assert cluster.a.maildir_files() == [] and cluster.c.maildir_files() == []
    # qmgr logs the outcome once the LMTP reply is in, which may be just after the file appears
    wait_for(lambda: f"relay=lmtp:{cluster.b.host}" in cluster.a.log(), 30, "the LMTP outcome logged on a")
    # b's lmtpd takes only what is homed on b.
    with smtplib.LMTP(cluster.b.host, cluster.b.lmtp_port, timeout=30) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail("alice@ext.example")
        code, text = lmtp.rcpt("lou@loopy.example")
        assert code == 550 and b"homed on node ghost" in text
        assert lmtp.rcpt("bob@acme.example")[0] == 250


def test_an_imap_login_on_c_is_proxied_to_b(cluster: Cluster) -> None:
    _send(cluster.a, "for-imap@ext.example")
    wait_for(lambda: cluster.b.message_ids()["<for-imap@ext.example>"] == 1, 120, "delivery to b")
    c = Imap(cluster.c.host, cluster.c.imap_port, source="127.0.1.9")
    login = c.cmd('a LOGIN "bob@acme.example" "secret"')[-1]
    assert login.startswith(b"a OK [CAPABILITY ") and b"UIDPLUS" in login, login
    assert b"OK" in c.cmd("b SELECT INBOX")[-1]
    fetched = b"\r\n".join(c.cmd("c UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
    assert b"<for-imap@ext.example>" in fetched
    stored = c.cmd("d STORE 1 +FLAGS (\\Flagged)")
    assert stored[-1].startswith(b"d OK") and b"\\Flagged" in stored[0]
    # The flag is in b's Maildir (the file name's info part), where b's imapd wrote it.
    assert any(p.name.endswith(":2,F") for p in cluster.b.maildir_files())
    assert c.cmd("e NOOP")[-1].startswith(b"e OK")
    # IDLE through the proxy: mail taken by a shows up in c's session, served by b.
    exists = int(re.search(rb"\* (\d+) EXISTS", b"\r\n".join(c.cmd("f SELECT INBOX"))).group(1))  # type: ignore[union-attr]
    c.sock.sendall(b"g IDLE\r\n")
    assert c.line().startswith(b"+ ")
    _send(cluster.a, "during-idle@ext.example")
    while not (line := c.line()).endswith(b"EXISTS"):
        pass
    assert line == b"* %d EXISTS" % (exists + 1)
    c.sock.sendall(b"DONE\r\n")
    while not (line := c.line()).startswith(b"g "):
        pass
    assert line.startswith(b"g OK")
    assert c.cmd("h LOGOUT")[-1].startswith(b"h OK")
    c.close()
    log = cluster.b.log()
    assert "method=proxy, rip=127.0.1.9" in log  # b saw the client's address, forwarded by c
    assert f"proxy=b ({cluster.b.host}:{cluster.b.imap_port})" in cluster.c.log()


def test_a_user_homed_on_b_submits_on_a(cluster: Cluster) -> None:
    with smtplib.SMTP(cluster.a.host, cluster.a.submission_port, timeout=60) as s:
        s.login("bob@acme.example", "secret")
        s.sendmail("bob@acme.example", ["carl@ext.example"],
                   "From: bob@acme.example\r\nTo: carl@ext.example\r\nSubject: out\r\n"
                   "Message-ID: <submitted-on-a@acme.example>\r\n\r\nsent from node a\r\n")
    wait_for(lambda: cluster.relay.has(b"<submitted-on-a@acme.example>"), 120, "relay of the submitted message")


def test_webhooks_of_replies_on_b_are_dispatched_once(cluster: Cluster) -> None:
    a = cluster.a

    def ok(*args: str) -> str:
        out = cli(a.data_dir, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    ok("campaigns", "add", "--tenant", "acme", "spring")
    for i in range(4):
        ok("campaigns", "register", "--tenant", "acme", "spring", "--message-id", f"<out-{i}@acme.example>",
           "--recipient", f"carl{i}@ext.example", "--subject", "Spring offer")
    ok("replies", "inbox", "add", "--tenant", "acme", "bob@acme.example")
    receiver = Receiver().start()
    try:
        receiver.secret = json.loads(ok("webhooks", "add", "--tenant", "acme", receiver.url, "--json"))["secret"]
        for i in range(4):
            _send(a, f"reply-{i}@ext.example", f"In-Reply-To: <out-{i}@acme.example>\r\n", f"carl{i}@ext.example")
        got = receiver.wait_for(4, timeout=180)
        assert len({p["id"] for p in got}) == 4, ok("webhooks", "deliveries", "--tenant", "acme", "--json")

        def all_delivered() -> bool:
            rows = json.loads(ok("webhooks", "deliveries", "--tenant", "acme", "--json"))
            return len(rows) == 4 and all(r["status"] == "delivered" for r in rows)

        wait_for(all_delivered, 120, "every webhook delivery marked delivered")
        ids = Counter(p["id"] for p in receiver.received)
        assert len(ids) == 4 and set(ids.values()) == {1}, ids
        assert not receiver.rejected
    finally:
        receiver.stop()


def test_a_proxy_loop_is_refused_at_the_hop_count(cluster: Cluster) -> None:
    c = Imap(cluster.c.host, cluster.c.imap_port)
    reply = c.cmd('a LOGIN "lou@loopy.example" "secret"')[-1]
    assert reply.startswith(b"a NO [UNAVAILABLE] Proxy loop: hop count exhausted on the way to node ghost"), reply
    c.close()


def test_a_proxied_login_under_another_secret_is_refused(cluster: Cluster) -> None:
    # From c's address (a node), as c would, but signed under a secret b does not share.
    grant = proxytoken.Grant("bob@acme.example", "127.0.1.9", 4000, 4)
    b = Imap(cluster.b.host, cluster.b.imap_port, source=cluster.c.host)
    assert b.cmd('a ID ("x-originating-ip" "127.0.1.9" "x-originating-port" "4000" "x-proxy-ttl" "4")')[-1] \
        .startswith(b"a OK")
    token = proxytoken.sign("not-the-cluster-secret-at-all", grant)
    reply = b.cmd(f'b LOGIN "bob@acme.example" "{token}"')[-1]
    assert reply == (b"b NO [UNAVAILABLE] Proxied login refused: proxy signature mismatch: "
                     b"cluster.secret differs between the nodes.")
    b.close()
    assert "proxy signature mismatch" in cluster.b.log()


def test_b_killed_while_mail_flows_mail_waits_on_a_and_arrives_once(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    sent: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def flow() -> None:
        try:
            for i in range(400):
                if stop.is_set():
                    return
                _send(a, f"flow-{i}@ext.example")
                sent.append(f"flow-{i}@ext.example")
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    sender = threading.Thread(target=flow, daemon=True)
    sender.start()
    try:
        wait_for(lambda: sum(1 for m in list(sent) if b.message_ids()[f"<{m}>"]) >= 5, 120, "mail flowing to b")
        b.kill9()  # mid-flow: some of a's LMTP transactions are cut, perhaps after b's commit
        taken = len(sent)
        wait_for(lambda: len(sent) >= taken + 5 or bool(errors), 120, "a taking mail while b is down")
    finally:
        stop.set()
        sender.join(120)
    assert not errors, errors
    wait_for(lambda: "status=deferred" in a.log(), 120, "a deferring the mail for b")
    b.log_path = b.data_dir / "master.restarted.log"
    b.start()
    wait_for(lambda: all(b.message_ids()[f"<{m}>"] >= 1 for m in sent), 180, "the queued mail on b")
    wait_for(lambda: a.queued() == 0, 120, "a's queue empty")
    ids = b.message_ids()
    # a retry of a transaction cut after b's commit finds b's copy (XDELIVERYID): nothing twice
    assert {m: ids[f"<{m}>"] for m in sent} == {m: 1 for m in sent}
