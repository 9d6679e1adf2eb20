"""What each service runs inside its worker: the composition root of Dovetail's processes.

Every runner builds its own runtime (database engine, caches) after the fork, starts its servers
on the sockets the master bound, and returns an exit status when told to stop. Everything a
service runs is imported here, at the top: the master imports this module before it forks, so
each worker starts with its code already loaded (as gunicorn's preload does), and a missing part
of the package stops ``serve`` at start instead of a service running without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import uvicorn

from ..config import Config
from ..db import make_engine
from ..delivery.agent import MaildirConfig, MaildirDeliveryAgent
from ..delivery.lmtp import LmtpDeliveryAgent, Nexthop
from ..directory.srs import Srs
from ..imap.limits import Limits as ImapLimits
from ..imap.server import ImapServer
from ..intake.lmtp import LmtpBackend, network_gate
from ..intake.local import mailbox_targets, transport_chooser
from ..intake.mx import MxBackend
from ..intake.senderauth import SenderAuth
from ..log import get_logger
from ..mailauth import dns as mailauth_dns
from ..mailauth.dnserrors import dnspython_txt
from ..mailauth.failures import shared_penalty
from ..mailauth.login import DirectoryAuthenticator
from ..mailauth.networks import in_networks, parse_networks
from ..mailauth.slots import shared_slots
from ..outbound import AgentConfig, DkimKeys, OutboundAgent, Transports
from ..outbound.forwarding import Forwarder
from ..outbound.mx import MxResolver
from ..outbound.shaping import ShapingConfig
from ..outbound.submission import SubmissionBackend
from ..queue import QueueConfig, QueueManager, Shard
from ..replies.hooks import local_delivery, outbound_events
from ..replies.runner import run_replies as replies_main
from ..runtime import Runtime
from ..sealing import Sealer
from ..smtp.limits import Limits as SmtpLimits
from ..smtp.server import SmtpServer
from ..storage import open_storage
from ..storage.api import DeliveryId
from ..web import counters
from ..web.app import create_app
from .worker import Runner, WorkerContext, supervise_listeners


def smtp_limits(cfg: Config) -> SmtpLimits:
    return SmtpLimits(max_message_size=cfg["smtp.max_message_size"], max_recipients=cfg["smtp.max_recipients"],
                  max_command_line=cfg["smtp.max_command_length"], max_line_length=cfg["smtp.max_line_length"],
                  max_errors=cfg["smtp.hard_error_limit"], max_connections=cfg["smtp.max_connections"],
                  max_connections_per_ip=cfg["smtp.max_connections_per_ip"],
                  idle_timeout=cfg["smtp.idle_timeout"], data_timeout=cfg["smtp.data_timeout"],
                  bare_lf=cfg["smtp.bare_lf"])


def imap_limits(cfg: Config) -> ImapLimits:
    return ImapLimits(max_literal=cfg["imap.max_literal_size"],
                  max_connections_per_user=cfg["imap.max_connections_per_user"],
                  max_connections_per_ip=cfg["imap.max_connections_per_ip"],
                  idle_timeout=cfg["imap.autologout"])


def flow_counters(rt: Runtime):  # noqa: ANN201
    """The dashboard's mail-flow ``record`` function, flushed to the database by a thread in this process."""
    counters.start_flusher(rt.engine, 5.0)
    return counters.record


class RepliesHandOver:
    """Wraps the Maildir agent: each message it delivered to a reply inbox goes to the replies pipeline.

    The storage finds each copy by its delivery id (queue id and recipient index), so the delivery
    code needs no knowledge of the replies engine.
    """

    def __init__(self, inner, resolver, hand_over) -> None:  # noqa: ANN001
        self.inner, self.resolver, self.hand_over = inner, resolver, hand_over

    async def deliver(self, message, recipients):  # noqa: ANN001, ANN201
        results = await self.inner.deliver(message, recipients)
        sent = [r.recipient for r in results if r.status == "sent"]
        if sent:
            await asyncio.to_thread(self._hand_over, message, sent)
        return results

    def _hand_over(self, message, recipients) -> None:  # noqa: ANN001
        for rcpt in recipients:
            delivery = DeliveryId(message.queue_id, rcpt.index, message.envelope.arrival)
            for target in self.resolver.resolve(rcpt.address).mailboxes:
                stored = open_storage(target.maildir, create=False).delivered(delivery)
                if stored is not None:
                    self.hand_over(target.tenant, target.address, target.maildir, stored.key)


class CountingAgent:
    """Wraps a delivery agent to count delivered/deferred/bounced recipients for the dashboard."""

    def __init__(self, inner, record) -> None:  # noqa: ANN001
        self.inner = inner
        self.record = record

    async def deliver(self, message, recipients):  # noqa: ANN001, ANN201
        results = await self.inner.deliver(message, recipients)
        for res in results:
            self.record({"sent": "delivered"}.get(res.status, res.status))
        return results


def configure_dns(cfg: Config) -> mailauth_dns.Resolver:
    """The process's one resolver (``dns.nameservers``, ``dns.timeout``), for every lookup it makes."""
    return mailauth_dns.configure(cfg["dns.nameservers"], cfg["dns.timeout"])


def sender_auth(cfg: Config, resolver: mailauth_dns.Resolver) -> SenderAuth | None:
    if not cfg["mx.sender_auth"]:
        return None
    return SenderAuth(resolver, cfg.hostname, enforce=cfg["mx.dmarc_enforce"], temperror=cfg["mx.auth_temperror"],
                      exempt=parse_networks(cfg["mx.sender_auth_exempt"]))


async def run_smtpd(ctx: WorkerContext) -> int:
    cfg = ctx.cfg
    rt = Runtime(cfg)
    auth = sender_auth(cfg, configure_dns(cfg))
    backend = MxBackend(rt.resolver, rt.queue, over_quota=cfg["smtp.over_quota"], record=flow_counters(rt),
                        auth=auth)
    limits = smtp_limits(cfg)
    if ctx.spec.max_connections:
        limits = replace(limits, max_connections=ctx.spec.max_connections)
    servers = []
    for sock in ctx.sockets:
        server = SmtpServer(backend, limits, hostname=cfg.hostname, ssl_context=ctx.ssl_context, listener="mx")
        await server.start(sock=sock)
        servers.append(server)

    async def stop_all(grace: float) -> None:
        await asyncio.gather(*(s.stop(grace) for s in servers))

    return await supervise_listeners(ctx, servers, stop_all)


async def run_submission(ctx: WorkerContext) -> int:
    """587 with STARTTLS and 465 with implicit TLS; AUTH only over TLS unless the client is trusted."""
    cfg = ctx.cfg
    rt = Runtime(cfg)
    # Failed logins are counted across the workers of the service, not per process. Suppressed recipients
    # are looked up in the replies engine's list (as the send API does) and reported to its event sink.
    bridge = outbound_events(rt.engine, cfg)
    backend = SubmissionBackend(rt.engine, rt.queue, penalty=shared_penalty(rt.layout.run), suppressions=bridge,
                                events=bridge)
    limits = smtp_limits(cfg)
    implicit_addr = cfg["listen.submissions"]
    servers = []
    for sock, address in zip(ctx.sockets, ctx.spec.listen, strict=False):
        implicit = bool(implicit_addr) and address == implicit_addr and ctx.ssl_context is not None
        server = SmtpServer(backend, limits, hostname=cfg.hostname, ssl_context=ctx.ssl_context,
                            implicit_tls=implicit, listener="submission", auth=True,
                            auth_plaintext=_trusted_client(cfg["auth.trusted_networks"]))
        await server.start(sock=sock)
        servers.append(server)

    async def stop_all(grace: float) -> None:
        await asyncio.gather(*(s.stop(grace) for s in servers))

    return await supervise_listeners(ctx, servers, stop_all)


def _trusted_client(networks: list[str]):  # noqa: ANN202
    """Plaintext AUTH only for clients in ``auth.trusted_networks`` (loopback by default), decided per connection."""
    nets = parse_networks(networks)
    return lambda client_ip: in_networks(client_ip, nets)


_SPECIAL_USE_DONE: set[str] = set()  # mail roots this process already gave their special-use folders


def storage_with_special_use(account):  # noqa: ANN001, ANN201
    """A user's storage, with Sent, Drafts, Trash, Junk and Archive created at the first login (once
    per root and process: later logins skip the checks and the subscriptions rewrite)."""
    storage = open_storage(account.mail_root)
    root = str(account.mail_root)
    if root not in _SPECIAL_USE_DONE:
        storage.ensure_special_use()
        _SPECIAL_USE_DONE.add(root)
    return storage


async def run_imapd(ctx: WorkerContext) -> int:
    cfg = ctx.cfg
    # One storage thread per worker: the sessions' storage calls (asyncio.to_thread) queue for it
    # instead of a pool of threads taking the GIL from each other (the pool spent more CPU handing
    # the GIL over in futex calls than on the commands); more cores means more workers.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="imapd-storage")
    )
    rt = Runtime(cfg)
    auth = DirectoryAuthenticator(rt.directory, rt.layout.mail)
    limits = imap_limits(cfg)
    # Failed logins are counted across the workers of the service, not per process.
    penalty = shared_penalty(rt.layout.run, limits.auth_fail_base_delay, limits.auth_fail_max_delay,
                             limits.auth_fail_lockout, limits.auth_fail_window)
    slots = shared_slots(rt.layout.run, "imapd")  # connections per IP and per user, across the workers
    servers = []
    imaps = cfg["listen.imaps"]
    for sock, address in zip(ctx.sockets, ctx.spec.listen, strict=False):
        implicit = bool(imaps) and address == imaps and ctx.ssl_context is not None
        server = ImapServer(auth, storage_with_special_use, limits=limits, ssl_context=ctx.ssl_context,
                            implicit_tls=implicit, trusted_networks=cfg["auth.trusted_networks"],
                            penalty=penalty, slots=slots)
        await server.start(sock=sock)
        servers.append(server)

    async def stop_all(grace: float) -> None:
        await asyncio.gather(*(s.stop(grace) for s in servers))

    return await supervise_listeners(ctx, servers, stop_all)


def local_agent(cfg: Config, rt: Runtime, record):  # noqa: ANN001, ANN201
    """The Maildir agent as both the queue and lmtpd deliver with it: quotas as configured, deliveries to
    reply inboxes handed over to the replies pipeline, outcomes counted for the dashboard."""
    maildir = MaildirDeliveryAgent(mailbox_targets(rt.resolver),
                                   MaildirConfig(quota_bounce=cfg["smtp.over_quota"] == "reject"))
    return CountingAgent(RepliesHandOver(maildir, rt.resolver, local_delivery(rt.engine, cfg)), record)


async def run_lmtpd(ctx: WorkerContext) -> int:
    """LMTP for mailbox nodes (and Postfix's ``virtual_transport = lmtp:...``): each recipient committed into
    its Maildir before its reply; TCP clients only from ``lmtp.allowed_networks``."""
    cfg = ctx.cfg
    rt = Runtime(cfg)
    record = flow_counters(rt)
    backend = LmtpBackend(rt.resolver, local_agent(cfg, rt, record), over_quota=cfg["smtp.over_quota"],
                          spool_dir=rt.queue.root / "tmp", record=record)
    limits = smtp_limits(cfg)
    if ctx.spec.max_connections:
        limits = replace(limits, max_connections=ctx.spec.max_connections)
    admit = network_gate(cfg["lmtp.allowed_networks"])
    servers = []
    for sock in ctx.sockets:
        server = SmtpServer(backend, limits, hostname=cfg.hostname, listener="lmtp", lmtp=True, admit=admit)
        await server.start(sock=sock)
        servers.append(server)

    async def stop_all(grace: float) -> None:
        await asyncio.gather(*(s.stop(grace) for s in servers))

    return await supervise_listeners(ctx, servers, stop_all)


def lmtp_nexthop(routes: Transports):  # noqa: ANN201
    """The LMTP agent's ``nexthop_for``: the lmtp rule of a recipient as a nexthop (None: no rule now)."""

    def nexthop_for(address: str) -> Nexthop | None:
        rule = routes.lmtp_for(address)
        if rule is None:
            return None
        if rule.port is None:
            return Nexthop(path=rule.host)
        return Nexthop(host=rule.host, port=rule.port)

    return nexthop_for


def _share(limit: int, shards: int) -> int:
    """One queue manager's part of a limit the ``shards`` managers split between them."""
    return max(1, -(-limit // shards))


async def run_qmgr(ctx: WorkerContext) -> int:
    """One queue manager; with ``[services.qmgr] workers = N`` each worker delivers a shard of the queue
    (:mod:`dovetail.queue.shard`), with its share of the delivery and per-destination concurrency."""
    cfg = ctx.cfg
    configure_dns(cfg)  # outbound MX and MTA-STS lookups
    rt = Runtime(cfg)
    shard = Shard(ctx.index, ctx.spec.workers)
    qcfg = QueueConfig(minimal_backoff=cfg["queue.minimal_backoff"], maximal_backoff=cfg["queue.maximal_backoff"],
                       maximal_queue_lifetime=cfg["queue.maximal_lifetime"],
                       bounce_queue_lifetime=cfg["queue.bounce_lifetime"],
                       max_concurrent_deliveries=_share(cfg["queue.delivery_concurrency"], shard.count),
                       hostname=cfg.hostname)

    record = flow_counters(rt)
    outbound = _outbound_agent(cfg, rt, qcfg, processes=shard.count)
    routes = Transports(rt.engine, cfg["directory.cache_check_interval"])
    lmtp = LmtpDeliveryAgent(lmtp_nexthop(routes), cfg.hostname)
    agents = {"virtual": local_agent(cfg, rt, record), "smtp": CountingAgent(outbound, record),
              "lmtp": CountingAgent(lmtp, record)}

    manager = QueueManager(rt.queue, agents, qcfg, transport_for=transport_chooser(rt.resolver, routes.lmtp_for),
                           shard=shard)
    task = asyncio.create_task(manager.run())
    started = asyncio.create_task(manager.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if not manager.started.is_set():
        await task  # raises why it could not start (another queue manager holds the queue, ...)
        raise RuntimeError("the queue manager ended before it started")
    ctx.ready()
    shaping_stats = cfg.data_dir / "run" / "outbound" / f"{ctx.spec.name}.{ctx.index}.json"
    publisher = asyncio.create_task(_publish_shaping(outbound, shaping_stats))
    stopped = asyncio.create_task(ctx.stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    publisher.cancel()
    with contextlib.suppress(FileNotFoundError):
        shaping_stats.unlink()
    if task.done():
        get_logger("qmgr").error("queue manager ended", error=repr(task.exception()))
        return 1
    manager.stop()
    try:
        await asyncio.wait_for(task, ctx.grace)
    except TimeoutError:
        task.cancel()
    await outbound.close()
    return 0


def _outbound_agent(cfg: Config, rt: Runtime, qcfg: QueueConfig, processes: int = 1) -> OutboundAgent:
    """The relay/direct-MX agent with DKIM signing; its results feed the replies engine's events.
    ``processes`` queue managers share the per-destination limits (see outbound.shaping)."""
    events = outbound_events(rt.engine, cfg)
    transports = Transports(rt.engine, cfg["directory.cache_check_interval"], sealer=Sealer.for_data_dir(cfg.data_dir))
    keys = DkimKeys(rt.engine, rt.layout.dkim)
    mx = MxResolver()
    forwarder = Forwarder(srs=Srs.for_data_dir(cfg.data_dir) if cfg["forwarding.srs"] else None, keys=keys,
                          authserv_id=cfg.hostname, txt=dnspython_txt(mx.resolver), arc_seal=cfg["forwarding.arc_seal"])
    return OutboundAgent(transports, keys,
                         AgentConfig(hostname=cfg.hostname, shaping=ShapingConfig.from_config(cfg, processes),
                                     schedule=qcfg),
                         mx=mx, events=events, forwarder=forwarder)


async def _publish_shaping(agent: OutboundAgent, path: Path, interval: float = 1.0) -> None:
    """Per-destination counters, pauses and sessions of this process, for ``/metrics``."""
    while True:
        await asyncio.to_thread(agent.shaper.publish, path)
        await asyncio.sleep(interval)


async def run_web(ctx: WorkerContext) -> int:
    cfg = ctx.cfg
    # The master migrated the database before the fork; Alembic's scripts are not read again here.
    app = create_app(cfg, make_engine(cfg.database_url))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, lifespan="on",
                                           timeout_graceful_shutdown=int(ctx.grace)))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the worker owns SIGTERM
    task = asyncio.create_task(server.serve(sockets=ctx.sockets))
    while not server.started:  # uvicorn sets a flag, no event, once it listens
        if task.done():
            task.result()  # raises why it could not start, if it raised
            raise RuntimeError("the web server did not start (its startup failed: see the log)")
        await asyncio.sleep(0.05)
    ctx.ready()

    async def stop_all(grace: float) -> None:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, grace + 5)
        except TimeoutError:
            task.cancel()

    class _Counts:
        @property
        def active_connections(self) -> int:
            return len(server.server_state.connections)

    return await supervise_listeners(ctx, [_Counts()], stop_all)


async def run_replies(ctx: WorkerContext) -> int:
    """IMAP sources of reply inboxes hosted elsewhere, and the durable webhook dispatcher."""
    return await replies_main(ctx.cfg, ctx.stop, ready=ctx.ready)


RUNNERS: dict[str, Runner] = {"smtpd": run_smtpd, "submission": run_submission, "imapd": run_imapd,
                              "qmgr": run_qmgr, "web": run_web, "replies": run_replies, "lmtpd": run_lmtpd}

