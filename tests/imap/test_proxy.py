"""Logins proxied to a mailbox's home node: three IMAP servers on 127.0.0.2-4 sharing one directory.

``front`` serves no mailbox of its own tenant here and proxies to ``home``; ``stranger`` is a node whose
``cluster.secret`` differs; tenant ``loopy`` is homed on node ``ghost`` whose IMAP address is the front's
own, a misconfiguration that would proxy forever without the hop count.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.directory.nodes import NodeStore
from dovetail.imap.limits import Limits
from dovetail.imap.server import ImapServer
from dovetail.mailauth import proxytoken
from dovetail.mailauth.homes import LoginHomes
from dovetail.mailauth.login import DirectoryAuthenticator
from tests.imap.imap_testkit import RawClient

SECRET = "s3cret-shared-by-the-nodes"
CLIENT_IP = "127.0.1.5"  # the client connects from here, so the forwarded address is recognisable


class Client(RawClient):
    """RawClient from ``source`` (``CLIENT_IP`` unless told) to ``host``."""

    def __init__(self, host: str, port: int, source: str = CLIENT_IP) -> None:
        self.sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        self.buf = b""
        self.greeting = self.readline()


@dataclass
class Nodes:
    loop: asyncio.AbstractEventLoop
    servers: dict[str, ImapServer]
    ports: dict[str, int]
    root: Path

    def client(self, name: str) -> Client:
        return Client(self.servers[name].host, self.ports[name])  # type: ignore[attr-defined]


def _bound(host: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("proxy")
    engine = make_engine(f"sqlite:///{root / 'dovetail.db'}")
    migrate(engine)
    hosts = {"front": "127.0.0.2", "home": "127.0.0.3", "stranger": "127.0.0.4"}
    socks = {name: _bound(host) for name, host in hosts.items()}
    ports = {name: s.getsockname()[1] for name, s in socks.items()}
    store = NodeStore(engine)
    store.add("front", "mx", imap=f"127.0.0.2:{ports['front']}")
    store.add("home", "mailbox", lmtp="127.0.0.3:24", imap=f"127.0.0.3:{ports['home']}")
    store.add("stranger", "mx", imap=f"127.0.0.4:{ports['stranger']}")
    store.add("ghost", "mailbox", lmtp="127.0.0.9:24", imap=f"127.0.0.2:{ports['front']}")
    directory = Directory(engine)
    for tenant, node, domain in (("acme", "home", "acme.example"), ("loopy", "ghost", "loopy.example")):
        directory.tenant_add(tenant, node=node)
        directory.domain_add(domain, tenant)
    directory.mailbox_add("bob@acme.example", "{PLAIN}bobpw")
    directory.mailbox_add("lou@loopy.example", "{PLAIN}loupw")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: dict[str, ImapServer] = {}
    for name in hosts:
        # Each node keeps its own Maildirs: the home node's are the only ones bob's mail may reach.
        auth = DirectoryAuthenticator(directory, root / name / "mail")
        homes = LoginHomes(store, name, "another-secret-entirely" if name == "stranger" else SECRET, ttl=0)
        # Few connections per IP, so that the home node counting the front's address as one client would show.
        limits = Limits(auth_fail_base_delay=0.01, max_connections_per_ip=3)
        server = ImapServer(auth, limits=limits, homes=homes)
        server.host = hosts[name]  # type: ignore[attr-defined]
        asyncio.run_coroutine_threadsafe(server.start(sock=socks[name]), loop).result(10)
        servers[name] = server
    try:
        yield Nodes(loop, servers, ports, root)
    finally:
        for server in servers.values():
            asyncio.run_coroutine_threadsafe(server.stop(1.0), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        engine.dispose()


def _login(c: Client, user: str, password: str) -> list[bytes]:
    return c.cmd(f'a LOGIN "{user}" "{password}"'.encode())


def test_a_login_homed_elsewhere_is_served_by_the_home_node_through_the_front(nodes: Nodes) -> None:
    c = nodes.client("front")
    ok = _login(c, "bob@acme.example", "bobpw")[-1]
    # The capabilities are the home node's, after login (the front's pre-login list has no UIDPLUS).
    assert ok.startswith(b"a OK [CAPABILITY ") and b"UIDPLUS" in ok and b"IDLE" in ok, ok
    message = b"From: a@ext.example\r\nSubject: proxied\r\nMessage-ID: <p1@ext>\r\n\r\nhello through the proxy\r\n"
    c.send(b"b APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert c.read_until_tagged(b"b")[-1].startswith(b"b OK")
    assert c.cmd(b"c SELECT INBOX")[-1].startswith(b"c OK")
    assert c.fetch_literal(b"d", b"FETCH 1 BODY.PEEK[]") == message
    assert b"\\Flagged" in b"".join(c.cmd(b"e STORE 1 +FLAGS (\\Flagged)"))
    # Everything landed in the home node's Maildir; the front holds none.
    assert list((nodes.root / "home" / "mail" / "acme").rglob("*,S=*"))
    assert not (nodes.root / "front" / "mail").exists()
    # The home node saw the client's own address, forwarded by the front from a node address.
    seen = [s for s in nodes.servers["home"].sessions if s.account and s.account.username == "bob@acme.example"]
    assert [(s.conn.remote_ip, s.forwarded_by) for s in seen] == [(CLIENT_IP, "127.0.0.2")]
    # IDLE through the proxy: a message appended by another client shows up at once.
    c.send(b"f IDLE\r\n")
    assert c.readline().startswith(b"+ ")
    other = nodes.client("front")
    _login(other, "bob@acme.example", "bobpw")
    other.send(b"g APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert other.read_until_tagged(b"g")[-1].startswith(b"g OK")
    assert c.readline(timeout=30) == b"* 2 EXISTS"
    c.send(b"DONE\r\n")
    assert c.read_until_tagged(b"f")[-1].startswith(b"f OK")
    assert c.cmd(b"h NOOP")[-1].startswith(b"h OK")
    assert c.cmd(b"i LOGOUT")[0] == b"* BYE Logging out"
    assert c.closed()
    other.close()


def test_the_home_node_counts_connections_per_client_not_per_front(nodes: Nodes) -> None:
    # Four clients from four addresses through one front: the home node sees them all from 127.0.0.2.
    clients = []
    for i in range(4):
        c = Client.__new__(Client)
        c.sock = socket.create_connection(("127.0.0.2", nodes.ports["front"]), timeout=10,
                                          source_address=(f"127.0.2.{i + 1}", 0))
        c.buf = b""
        c.greeting = c.readline()
        assert _login(c, "bob@acme.example", "bobpw")[-1].startswith(b"a OK"), i
        clients.append(c)
    for c in clients:
        assert c.cmd(b"b LOGOUT")[-1].startswith(b"b OK")
        c.close()


def test_a_wrong_password_is_refused_by_the_front(nodes: Nodes) -> None:
    c = nodes.client("front")
    assert _login(c, "bob@acme.example", "wrong")[-1] == b"a NO [AUTHENTICATIONFAILED] Authentication failed."
    c.close()


def test_a_node_with_another_secret_gets_unavailable(nodes: Nodes) -> None:
    c = nodes.client("stranger")
    reply = _login(c, "bob@acme.example", "bobpw")[-1]
    assert reply.startswith(b"a NO [UNAVAILABLE] Proxied login refused: proxy signature mismatch: "
                            b"cluster.secret differs between the nodes"), reply
    assert c.cmd(b"b NOOP")[-1].startswith(b"b OK")  # the session stays, not logged in
    c.close()


def test_a_proxy_loop_ends_at_the_hop_count(nodes: Nodes) -> None:
    c = nodes.client("front")
    reply = _login(c, "lou@loopy.example", "loupw")[-1]
    assert reply == (f"a NO [UNAVAILABLE] Proxy loop: hop count exhausted on the way to node ghost "
                     f"(127.0.0.2:{nodes.ports['front']}).").encode()
    c.close()


def test_a_proxy_token_from_outside_the_cluster_is_refused(nodes: Nodes) -> None:
    # A token the home node would accept from the front, sent straight from a client address.
    grant = proxytoken.Grant("bob@acme.example", CLIENT_IP, 0, 4)
    c = nodes.client("home")
    c.cmd(b'a ID ("x-originating-ip" "%s" "x-proxy-ttl" "4")' % CLIENT_IP.encode())
    reply = _login(c, "bob@acme.example", proxytoken.sign(SECRET, grant))[-1]
    assert reply == b"a NO [AUTHENTICATIONFAILED] Proxied login refused: not from a node of the cluster."
    c.close()


def test_the_home_node_serves_its_own_logins_directly(nodes: Nodes) -> None:
    c = nodes.client("home")
    assert _login(c, "bob@acme.example", "bobpw")[-1].startswith(b"a OK")
    assert not [s for s in nodes.servers["home"].sessions if s.proxied_to]
    c.close()


def test_a_proxy_token_replayed_from_a_node_address_is_refused(nodes: Nodes) -> None:
    # What a login proxied by the front looks like on the wire to the home node, sent twice from the front's address.
    token = proxytoken.sign(SECRET, proxytoken.Grant("bob@acme.example", CLIENT_IP, 0, 4))
    replies = []
    for _ in range(2):
        c = Client("127.0.0.3", nodes.ports["home"], source="127.0.0.2")
        assert c.cmd(b'a ID ("x-originating-ip" "%s" "x-proxy-ttl" "4")' % CLIENT_IP.encode())[-1].startswith(b"a OK")
        replies.append(_login(c, "bob@acme.example", token)[-1])
        c.close()
    assert replies[0].startswith(b"a OK"), replies
    refused = b"a NO [UNAVAILABLE] Proxied login refused: proxy token used before: a replayed login."
    assert replies[1] == refused, replies
