"""Where a login is served: here, or proxied to the node that holds the account's Maildirs.

A tenant's ``home_node`` (the directory's placement) names the mailbox node holding its mail; the node
list gives that node's IMAP address. ``LoginHomes.route`` answers for one account: None to serve it
here, the home node's ``host:port`` to proxy to, or a refusal when the home cannot be reached through
the node list. The same node list says which peer addresses are nodes, the only ones whose proxied
logins a home node trusts (:mod:`dovetail.mailauth.proxytoken`). Without ``node.name`` (a single
installation) every login is served here.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

from ..directory.nodes import Node, NodeStore
from .accounts import Account
from .proxytoken import Grant, Replays, check
from .replays import MemoryReplays


@dataclass(frozen=True)
class Route:
    """Proxy the login to ``address`` (``host:port``) of node ``node``."""

    node: str
    address: str


@dataclass(frozen=True)
class Refusal:
    """The home node is known but cannot be proxied to (no IMAP address, no secret)."""

    text: str


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def _addresses(host: str) -> set[str]:
    """The IP addresses of ``host`` (itself when it is a literal; its A/AAAA records otherwise)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def _plain(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


class LoginHomes:
    """The login side of placement, over the node list (read at most once a ``ttl``; blocking calls,
    made in a thread by the adapters)."""

    def __init__(self, nodes: NodeStore, here: str, secret: str, ttl: float = 1.0,
                 replays: Replays | None = None) -> None:
        self.nodes = nodes
        self.here = here.strip().lower()
        self.secret = secret
        self.ttl = ttl
        # The proxy tokens accepted here, so none is accepted twice (the node's workers share a file: replays.py).
        self.replays: Replays = replays if replays is not None else MemoryReplays()
        self._cache: tuple[float, dict[str, Node], frozenset[str]] | None = None

    def _list(self) -> tuple[dict[str, Node], frozenset[str]]:
        if self._cache is None or time.monotonic() - self._cache[0] > self.ttl:
            listed = {n.name: n for n in self.nodes.list()}
            ips: set[str] = set()
            for node in listed.values():
                for address in (node.imap, node.lmtp):
                    if address and not address.startswith("unix:"):
                        ips |= _addresses(_host(address))
            self._cache = (time.monotonic(), listed, frozenset(ips))
        return self._cache[1], self._cache[2]

    def check_token(self, grant: Grant, token: str) -> str | None:
        """None when ``token`` proves ``grant`` and was not accepted here before; else why not."""
        return check(self.secret, grant, token, replays=self.replays)

    def route(self, account: Account) -> Route | Refusal | None:
        """None: serve here; a ``Route`` to the home node; a ``Refusal`` when the home is elsewhere but unusable."""
        home = (account.home_node or "").strip().lower()
        if not self.here or not home or home == self.here:
            return None
        node = self._list()[0].get(home)
        if node is None:
            return Refusal(f"home node {home} is not in the node list")
        if not node.imap:
            return Refusal(f"home node {home} has no IMAP address (dovetail node add --imap)")
        if not self.secret:
            return Refusal(f"mailbox homed on node {home}: proxying needs cluster.secret on every node")
        return Route(home, node.imap)

    def is_node_address(self, ip: str) -> bool:
        """Whether ``ip`` is the address of a node in the list (where a proxied login may come from)."""
        return _plain(ip) in self._list()[1]

    def source_address(self) -> str | None:
        """The IP this node connects from to another node: the host of its own IMAP address, when a literal
        (so the home node sees a node address even where the route would pick another source)."""
        node = self._list()[0].get(self.here)
        if node is None or not node.imap:
            return None
        host = _host(node.imap)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return None if ipaddress.ip_address(host).is_unspecified else host
