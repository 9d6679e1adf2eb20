"""The screening stage in front of a real SMTP listener: real sockets from 127.0.0.x source addresses
(and ::1), DNSBL answers from a loopback DNS server, the cache in a real SQLite file."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dovetail.intake.screen.cache import ScreenCache
from dovetail.intake.screen.sites import parse_sites
from dovetail.intake.screen.stage import MxScreen, ScreenConfig
from dovetail.mailauth.dns import Resolver
from dovetail.mailauth.networks import parse_networks
from dovetail.smtp.limits import Limits

from ..dnsserver import LoopbackDNS
from ..smtp.conftest import FileBackend, ServerThread


class Client:
    """A raw SMTP client bound to a chosen source address."""

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline(4096)

    def reply(self) -> tuple[int, list[bytes]]:
        lines = []
        while True:
            raw = self.line()
            if not raw:
                raise ConnectionError(f"closed after {lines!r}")
            lines.append(raw)
            if raw[3:4] == b" ":
                return int(raw[:3]), lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture
def screened(tmp_path: Path, dns_server: LoopbackDNS) -> Iterator[Callable[..., tuple[ServerThread, MxScreen]]]:
    started: list[ServerThread] = []

    def start(limits: Limits | None = None, sock: socket.socket | None = None, sites: list[str] | None = None,
              allow: list[str] | None = None, deny: list[str] | None = None,
              **config: object) -> tuple[ServerThread, MxScreen]:
        cfg = ScreenConfig(sites=tuple(parse_sites(sites or [])), allow=tuple(parse_networks(allow or [])),
                           deny=tuple(parse_networks(deny or [])), dns_timeout=2.0, **config)  # type: ignore[arg-type]
        screen = MxScreen(cfg, ScreenCache(tmp_path / "screen.sqlite"), Resolver([dns_server.nameserver], 2.0))
        backend = FileBackend(tmp_path / f"queue{len(started)}")
        st = ServerThread(backend, limits=limits or Limits(), hostname="mx.test", listener="mx", screen=screen)
        st.start(sock)
        started.append(st)
        return st, screen

    yield start
    for st in started:
        st.stop()


def send_message(client: Client) -> int:
    """EHLO, one message; the code of the final reply."""
    client.send(b"EHLO client.test\r\n")
    assert client.reply()[0] == 250
    client.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<ok@y.test>\r\nDATA\r\n")
    assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
    client.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    return client.reply()[0]


def test_client_that_waits_for_the_banner_passes_and_is_remembered(screened, caplog) -> None:  # noqa: ANN001
    st, screen = screened(greet_wait=0.5)
    first = Client(st.port, "127.0.0.7")
    assert first.line() == b"220-mx.test ESMTP\r\n"
    code, lines = first.reply()  # the rest of the banner comes after the greet wait
    assert code == 220 and lines[-1].startswith(b"220 mx.test")
    assert send_message(first) == 250
    first.close()
    assert screen.counts["pass_new"] == 1
    again = Client(st.port, "127.0.0.7")  # cache hit: no greet wait, a one-line banner straight away
    assert again.line().startswith(b"220 mx.test ESMTP")
    again.close()
    assert screen.counts["pass_old"] == 1
    assert "PASS NEW [127.0.0.7]:" in caplog.text and "PASS OLD [127.0.0.7]:" in caplog.text


def test_pregreet_client_is_refused(screened, caplog) -> None:  # noqa: ANN001
    st, screen = screened(greet_wait=5.0)
    client = Client(st.port, "127.0.0.8")
    assert client.line() == b"220-mx.test ESMTP\r\n"
    started = time.monotonic()
    client.send(b"EHLO spambot.test\r\n")  # talks before the banner is complete
    code, lines = client.reply()
    assert code == 220
    assert client.reply() == (550, [b"550 5.5.1 Protocol error\r\n"])
    assert client.closed()
    assert time.monotonic() - started < 4.0  # refused as soon as it talked, not after the whole wait
    assert screen.counts["pregreet"] == 1 and screen.counts["pass_new"] == 0
    assert "PREGREET 19 after" in caplog.text and "from [127.0.0.8]:" in caplog.text
    assert screen.cache is not None
    entry = screen.cache.get("127.0.0.8")
    assert entry is not None and entry.verdict == "PREGREET" and not entry.passed(time.time())


def test_client_pipelining_before_the_banner_gets_nothing_through(screened) -> None:  # noqa: ANN001
    st, screen = screened(greet_wait=5.0)
    client = Client(st.port, "127.0.0.9")
    client.send(b"EHLO bot\r\nMAIL FROM:<s@bad.test>\r\nRCPT TO:<ok@y.test>\r\nDATA\r\nSubject: x\r\n\r\nspam\r\n.\r\n")
    assert client.line() == b"220-mx.test ESMTP\r\n"
    assert client.reply()[0] == 220
    assert client.reply()[0] == 550
    assert client.closed()
    assert st.backend.committed == []
    assert screen.counts["pregreet"] == 1


def test_pregreet_drop_action_says_nothing(screened) -> None:  # noqa: ANN001
    st, _ = screened(greet_wait=5.0, pregreet_action="drop")
    client = Client(st.port, "127.0.0.10")
    assert client.line() == b"220-mx.test ESMTP\r\n"
    client.send(b"HELO x\r\n")
    assert client.closed()


def test_dnsbl_listed_client_is_refused(screened, dns_server: LoopbackDNS, caplog) -> None:  # noqa: ANN001
    dns_server.a("11.0.0.127.bl.example", "127.0.0.2")
    dns_server.a("11.0.0.127.zen.example", "127.0.0.4")
    st, screen = screened(greet_wait=0.2, sites=["zen.example*2", "bl.example=127.0.0.[2..11]*1"], threshold=3)
    client = Client(st.port, "127.0.0.11")
    assert client.line() == b"220-mx.test ESMTP\r\n"
    assert client.reply()[0] == 220
    client.send(b"EHLO listed.test\r\n")
    code, lines = client.reply()
    assert code == 550 and b"5.7.1 Service unavailable; client [127.0.0.11] blocked using zen.example" in lines[0]
    assert client.closed()
    assert screen.counts["dnsbl"] == 1
    assert "DNSBL rank 3 for [127.0.0.11]:" in caplog.text
    clean = Client(st.port, "127.0.0.12")  # not listed: passes
    assert clean.line() == b"220-mx.test ESMTP\r\n"
    assert clean.reply()[0] == 220 and send_message(clean) == 250
    clean.close()
    entry = screen.cache.get("127.0.0.11") if screen.cache else None
    assert entry is not None and entry.verdict == "DNSBL" and entry.score == 3
    # The score is cached: a second connection is refused without asking the lists again.
    asked = dns_server.zone.count("11.0.0.127.zen.example")
    again = Client(st.port, "127.0.0.11")
    again.line(), again.reply()
    again.send(b"EHLO listed.test\r\n")
    assert again.reply()[0] == 550
    assert dns_server.zone.count("11.0.0.127.zen.example") == asked


def test_dnsbl_defer_action(screened, dns_server: LoopbackDNS) -> None:  # noqa: ANN001
    dns_server.a("13.0.0.127.bl.example", "127.0.0.2")
    st, _ = screened(greet_wait=0.1, sites=["bl.example"], dnsbl_action="defer")
    client = Client(st.port, "127.0.0.13")
    client.line(), client.reply()
    client.send(b"EHLO x\r\n")
    assert client.reply()[0] == 421


def test_error_codes_of_a_list_do_not_block(screened, dns_server: LoopbackDNS, caplog) -> None:  # noqa: ANN001
    dns_server.a("14.0.0.127.zen.example", "127.255.255.254")  # "query through a public resolver"
    st, screen = screened(greet_wait=0.1, sites=["zen.example*3"])
    client = Client(st.port, "127.0.0.14")
    client.line()
    assert client.reply()[0] == 220 and send_message(client) == 250
    client.close()
    assert screen.counts["pass_new"] == 1 and screen.counts["dnsbl"] == 0
    assert "zen.example: 127.255.255.254 for [127.0.0.14] is an error code of the list" in caplog.text


def test_dnswl_offsets_a_listing(screened, dns_server: LoopbackDNS) -> None:  # noqa: ANN001
    dns_server.a("15.0.0.127.zen.example", "127.0.0.2")
    dns_server.a("15.0.0.127.wl.example", "127.0.10.2")
    st, screen = screened(greet_wait=0.1, sites=["zen.example*3", "wl.example=127.0.[0..255].[1..3]*-5"])
    client = Client(st.port, "127.0.0.15")
    client.line()
    assert client.reply()[0] == 220 and send_message(client) == 250
    client.close()
    assert screen.counts["pass_new"] == 1
    entry = screen.cache.get("127.0.0.15") if screen.cache else None
    assert entry is not None and entry.score == -2


def test_allowlist_skips_every_test_and_denylist_refuses(screened, dns_server: LoopbackDNS) -> None:  # noqa: ANN001
    dns_server.a("16.0.0.127.zen.example", "127.0.0.2")
    st, screen = screened(greet_wait=30.0, sites=["zen.example"], allow=["127.0.0.16/32"], deny=["127.0.0.17/32"])
    allowed = Client(st.port, "127.0.0.16")  # listed, but allowlisted: a one-line banner, no wait
    assert allowed.line().startswith(b"220 mx.test ESMTP")
    assert send_message(allowed) == 250
    allowed.close()
    denied = Client(st.port, "127.0.0.17")
    assert denied.line().startswith(b"554 5.7.1 Service unavailable; client [127.0.0.17] blocked using deny list")
    assert denied.closed()
    assert screen.counts["allowlisted"] == 1 and screen.counts["denylisted"] == 1


def test_ipv6_client(screened, dns_server: LoopbackDNS) -> None:  # noqa: ANN001
    dns_server.a("1." + "0." * 31 + "bl.example", "127.0.0.2")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind(("::1", 0))
    sock.listen(16)
    st, screen = screened(sock=sock, greet_wait=0.1, sites=["bl.example"])
    client = Client(st.port, "::1", host="::1")
    assert client.line() == b"220-mx.test ESMTP\r\n"
    client.reply()
    client.send(b"EHLO v6.test\r\n")
    code, lines = client.reply()
    assert code == 550 and b"client [::1] blocked using bl.example" in lines[0]
    assert screen.counts["dnsbl"] == 1


def test_passed_clients_are_shared_through_the_cache_file(screened, tmp_path: Path) -> None:  # noqa: ANN001
    st, _ = screened(greet_wait=0.1)
    client = Client(st.port, "127.0.0.18")
    client.line(), client.reply()
    client.close()
    other, screen = screened(greet_wait=30.0)  # a second worker with its own connection to the same file
    entry_seen = screen.cache.get("127.0.0.18") if screen.cache else None
    assert entry_seen is not None and entry_seen.verdict == "PASS"
    again = Client(other.port, "127.0.0.18")
    assert again.line().startswith(b"220 mx.test")
    again.close()


def test_smtplib_client_passes_the_greet_wait(screened) -> None:  # noqa: ANN001
    st, screen = screened(greet_wait=0.3)
    with smtplib.SMTP(timeout=10, source_address=("127.0.0.19", 0)) as s:
        code, _ = s.connect("127.0.0.1", st.port)
        assert code == 220
        s.sendmail("a@x.test", ["ok@y.test"], b"Subject: x\r\n\r\nbody\r\n")
    assert screen.counts["pass_new"] == 1


def test_a_client_on_a_dnswl_passes_greylisting_from_then_on(screened, dns_server: LoopbackDNS,
                                                             tmp_path: Path) -> None:  # noqa: ANN001
    """A DNSWL listing outweighing any DNSBL one allowlists the client's network in the greylist (as
    postgrey does for well-known senders), until the greylist's max_age without mail."""
    from dovetail.db import make_engine, migrate
    from dovetail.intake.greylist import Greylist, GreylistSettings

    engine = make_engine(f"sqlite:///{tmp_path / 'gl.db'}")
    migrate(engine)
    greylist = Greylist(engine, GreylistSettings(enabled=True, exempt=[]))
    dns_server.a("18.0.0.127.wl.example", "127.0.10.2")
    st, screen = screened(greet_wait=0.1, sites=["wl.example=127.0.[0..255].[1..3]*-5"])
    screen.on_allowlisted = greylist.allow_dnswl
    client = Client(st.port, "127.0.0.18")
    client.line()
    assert client.reply()[0] == 220 and send_message(client) == 250
    client.close()
    [row] = greylist.clients("127.0.0.18")
    assert row["allowed"] and row["network"] == "127.0.0.0/24"
    assert greylist.check("127.0.0.18", "a@x.test", "ok@y.test").reply() is None  # no 451 the first time
    # A client on no list gets no such favour.
    other = Client(st.port, "127.0.5.9")
    other.line()
    assert other.reply()[0] == 220 and send_message(other) == 250
    other.close()
    assert greylist.clients("127.0.5.9") == []
    engine.dispose()
