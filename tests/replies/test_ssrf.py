"""Webhook URLs may not point at this host or its private network (SSRF), at add time and at delivery."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dovetail.replies import netguard
from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.outbox import Outbox
from dovetail.replies.pipeline import Source
from dovetail.replies.registry import RegistryError
from dovetail.replies.service import RepliesService
from dovetail.replies.webhook_client import ConnectError, WebhookClient

from .mails import reply
from .receiver import Receiver
from .stack import allow_local_webhooks

BLOCKED = [
    "http://127.0.0.1/hook", "http://127.1.2.3:8025/api/v1/tenants", "http://localhost:8025/",
    "http://LOCALHOST./x", "http://app.localhost/x", "http://10.0.0.5/x", "http://192.168.1.1/x",
    "http://172.16.0.1/x", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0:8025/",
    "http://[::1]:8025/", "http://[::ffff:127.0.0.1]/x", "http://[fe80::1]/x", "http://[fd00::1]/x",
    "http://100.64.0.1/x", "http://2130706433/x", "http://0x7f.1/x", "https://224.0.0.1/x",
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.mark.parametrize("url", BLOCKED)
def test_private_targets_refused_when_added(engine: Engine, url: str) -> None:
    box = Outbox(engine)
    with pytest.raises(RegistryError, match="non-public|this machine"):
        box.add_endpoint("acme", url)
    assert box.endpoints("acme") == []


def test_public_or_unresolvable_names_are_accepted(engine: Engine) -> None:
    box = Outbox(engine)
    box.add_endpoint("acme", "https://93.184.216.34/hook")
    box.add_endpoint("acme", "https://hooks.invalid/hook")  # checked again at delivery
    assert len(box.endpoints("acme")) == 2


def test_delivery_to_loopback_is_refused_after_resolution(engine: Engine, secret: bytes,
                                                          receiver: Receiver) -> None:
    """An endpoint stored while private targets were allowed (or a name that later resolves to one)
    is never posted to once they are not."""
    allowed = RepliesService(engine, secret, allow_private_webhooks=True)
    ep = allowed.outbox.add_endpoint("acme", receiver.url.replace("127.0.0.1", "localhost"))
    receiver.secret = ep["secret"]
    allowed.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>", recipient="anna@client.example")
    allowed.process_message(reply(in_reply_to="<a@acme.example>"), Source("acme", "test"))

    guarded = RepliesService(engine, secret)
    assert asyncio.run(Dispatcher(guarded.outbox).run_once()) == 1
    assert receiver.received == [] and receiver.headers == []
    [delivery] = guarded.outbox.deliveries("acme")
    assert delivery["status"] == "pending" and "this machine" in (delivery["last_error"] or "")


def test_guarded_client_refuses_names_resolving_to_private_addresses(receiver: Receiver) -> None:
    """A name (not a literal) that resolves to a non-public address: the connection is never made."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip("the host name does not resolve here")
    if all(netguard.is_public(ipaddress.ip_address(a.split("%")[0])) for a in addresses):
        pytest.skip("the host name resolves to public addresses only")

    async def post() -> None:
        client = WebhookClient(guard=True)
        try:
            await client.post(f"http://{name}:{receiver.port}/hook", b"{}", {})
        finally:
            await client.aclose()

    with pytest.raises(ConnectError, match="non-public"):
        asyncio.run(post())
    assert receiver.headers == []


def test_config_key_allows_private_targets(engine: Engine, tmp_path: Path) -> None:
    data = tmp_path / "cfg-data"
    data.mkdir()
    with pytest.raises(RegistryError):
        RepliesService.open(engine, data).outbox.add_endpoint("acme", "http://127.0.0.1:9/hook")
    allow_local_webhooks(data)
    svc = RepliesService.open(engine, data)
    assert svc.outbox.allow_private
    assert svc.outbox.add_endpoint("acme", "http://127.0.0.1:9/hook")["url"] == "http://127.0.0.1:9/hook"


def test_is_public() -> None:
    assert netguard.is_public(ipaddress.ip_address("8.8.8.8"))
    assert netguard.is_public(ipaddress.ip_address("2606:4700::1111"))
    for text in ("127.0.0.1", "10.1.1.1", "169.254.169.254", "::1", "::ffff:10.0.0.1", "2002:7f00:1::1", "::"):
        assert not netguard.is_public(ipaddress.ip_address(text)), text
