"""What each service runs inside its worker: the composition root of Dovetail's processes.

Every runner builds its own runtime (database engine, caches) after the fork, starts its servers
on the sockets the master bound, and returns an exit status when told to stop. What a service runs
is imported here, at the top: the master imports this module before it forks, so each worker
starts with its code already loaded (as gunicorn's preload does), and a missing part of the package
stops ``serve`` at start instead of a service running without it. The exceptions are the HTTP
services (web admin, transfer endpoint) and the ACME client: FastAPI, uvicorn and acme are some
30 MB that every other worker, the IMAP ones above all, would otherwise carry. Their runners import
them after the fork, from the code the master held for them (:mod:`dovetail.master.preload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sqlite3
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..datadir import Layout
from ..db import make_engine
from ..delivery.agent import MaildirConfig, MaildirDeliveryAgent
from ..delivery.lmtp import LmtpDeliveryAgent, LmtpPool, Nexthop
from ..directory import Directory, Resolver
from ..directory.nodes import NodeStore
from ..directory.srs import Srs
from ..imap.limits import Limits as ImapLimits
from ..imap.server import ImapServer
from ..intake.contentfilter import ContentFilter
from ..intake.direct import DirectDelivery
from ..intake.greylist import Greylist, GreylistSettings
from ..intake.lmtp import LmtpBackend, network_gate
from ..intake.local import HomeNodes, mailbox_targets, transport_chooser
from ..intake.milter import parse_milter
from ..intake.milter.client import Timeouts as MilterTimeouts
from ..intake.mx import MxBackend
from ..intake.ratelimit import RatePolicy, rate_limits, shared_windows
from ..intake.rspamd import RspamdClient
from ..intake.screen.cache import ScreenCache, cache_path
from ..intake.screen.sites import parse_sites
from ..intake.screen.stage import MxScreen, ScreenConfig
from ..intake.senderauth import SenderAuth
from ..intake.spampolicy import tenant_thresholds
from ..log import get_logger, hold_lines_per_turn
from ..mailauth import dns as mailauth_dns
from ..mailauth.cluster import counted_slots
from ..mailauth.dnserrors import dnspython_txt
from ..mailauth.failures import shared_penalty
from ..mailauth.homes import LoginHomes
from ..mailauth.login import DirectoryAuthenticator
from ..mailauth.networks import in_networks, parse_networks
from ..mailauth.replays import shared_replays
from ..outbound.dane import validating_resolver
from ..outbound.delivery import AgentConfig, OutboundAgent
from ..outbound.forwarding import Forwarder
from ..outbound.keys import DkimKeys
from ..outbound.mx import MxResolver
from ..outbound.shaping import ShapingConfig
from ..outbound.submission import SubmissionBackend
from ..outbound.transports import Transports
from ..queue import QueueConfig, QueueManager, Shard
from ..replies.handover import Delivered
from ..replies.hooks import local_delivery, outbound_events
from ..replies.runner import run_replies as replies_main
from ..reports.intake import local_delivery as reports_delivery
from ..runtime import Runtime
from ..smtp.limits import Limits as SmtpLimits
from ..smtp.server import SmtpServer
from ..storage import open_storage
from ..storage.api import DeliveryId
from ..vault import credentials_sealer
from ..web import counters
from .worker import Runner, WorkerContext, supervise_listeners


def smtp_limits(cfg: Config) -> SmtpLimits:
    return SmtpLimits(max_message_size=cfg["smtp.max_message_size"], max_recipients=cfg["smtp.max_recipients"],
                  max_command_line=cfg["smtp.max_command_length"], max_line_length=cfg["smtp.max_line_length"],
                  max_errors=cfg["smtp.hard_error_limit"], max_connections=cfg["smtp.max_connections"],
                  soft_error_limit=cfg["smtp.soft_error_limit"], error_sleep=cfg["smtp.error_sleep"],
                  max_connections_per_ip=cfg["smtp.max_connections_per_ip"],
                  idle_timeout=cfg["smtp.idle_timeout"], data_timeout=cfg["smtp.data_timeout"],
                  bare_lf=cfg["smtp.bare_lf"])


def mx_limits(cfg: Config) -> SmtpLimits:
    """The MX's limits: the SMTP ones plus stress mode and the per-network cap (``mx.*``)."""
    return replace(smtp_limits(cfg), stress_threshold=cfg["mx.stress_threshold"],
                   stress_idle_timeout=cfg["mx.stress_idle_timeout"], stress_max_errors=cfg["mx.stress_error_limit"],
                   max_connections_per_network=cfg["mx.max_connections_per_network"])


def mx_screen(cfg: Config, resolver: mailauth_dns.Resolver, run_dir: Path,
              greylist: Greylist | None = None) -> MxScreen:
    """The screening stage of the MX (``mx.screen.*``), its cache shared with the other smtpd workers."""
    try:
        sites = tuple(parse_sites(cfg["mx.screen.dnsbl_sites"]))
    except ValueError as exc:
        raise ValueError(f"mx.screen.dnsbl_sites: {exc}") from None
    config = ScreenConfig(
        greet_wait=cfg["mx.screen.greet_wait"], pregreet_action=cfg["mx.screen.pregreet_action"], sites=sites,
        threshold=cfg["mx.screen.dnsbl_threshold"], dnsbl_action=cfg["mx.screen.dnsbl_action"],
        allow=tuple(parse_networks(cfg["mx.screen.allow"])), deny=tuple(parse_networks(cfg["mx.screen.deny"])),
        cache_ttl=cfg["mx.screen.cache_ttl"], dnsbl_ttl=cfg["mx.screen.dnsbl_ttl"], dns_timeout=cfg["dns.timeout"])
    cache: ScreenCache | None
    try:
        cache = ScreenCache(cache_path(run_dir), max_rows=cfg["mx.screen.cache_size"])
    except (OSError, sqlite3.Error) as exc:
        get_logger("screen").warning("screening cache unavailable: every client is new", error=str(exc))
        cache = None
    return MxScreen(config, cache, resolver, on_allowlisted=greylist.allow_dnswl if greylist is not None else None)


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
    """Wraps the Maildir agent: each message it delivered goes to the hand-overs that take its mailbox
    (the replies pipeline for reply inboxes and intakes, the report reader for report intakes).

    The storage finds each copy by its delivery id (queue id and recipient index), so the delivery
    code needs no knowledge of either. The delivery returns once every hand-over has committed.
    """

    def __init__(self, inner, resolver, *hand_overs) -> None:  # noqa: ANN001, ANN002
        self.inner, self.resolver, self.hand_overs = inner, resolver, hand_overs

    async def deliver(self, message, recipients):  # noqa: ANN001, ANN201
        if hasattr(self.inner, "deliver_sync"):  # the copies and their lookup in one thread hop, not two
            results, wanted = await asyncio.to_thread(self._deliver_sync, message, recipients)
        else:
            results = await self.inner.deliver(message, recipients)
            sent = [r.recipient for r in results if r.status == "sent"]
            wanted = await asyncio.to_thread(self._stored, message, sent) if sent else []
        if any(wanted):
            await asyncio.gather(*(hand_over(items) for hand_over, items in zip(self.hand_overs, wanted, strict=True)
                                   if items))
        return results

    def _deliver_sync(self, message, recipients):  # noqa: ANN001, ANN202
        results = self.inner.deliver_sync(message, recipients)
        sent = [r.recipient for r in results if r.status == "sent"]
        return results, (self._stored(message, sent) if sent else [])

    def _stored(self, message, recipients) -> list[list[Delivered]]:  # noqa: ANN001
        """For each hand-over, the stored copies of these recipients it takes."""
        out: list[list[Delivered]] = [[] for _ in self.hand_overs]
        for rcpt in recipients:
            delivery = DeliveryId(message.queue_id, rcpt.index, message.envelope.arrival)
            junk = str(rcpt.index) in (message.envelope.extra.get("junk") or "").split(",")
            folder = "Junk" if junk else "INBOX"  # where the delivery agent put it
            for target in self.resolver.resolve(rcpt.address).mailboxes:
                item = Delivered(target.tenant, target.address, target.maildir, "", folder)
                takers = [i for i, hand_over in enumerate(self.hand_overs) if hand_over.wants(item)]
                if not takers:
                    continue
                stored = open_storage(target.maildir, create=False).delivered(delivery, folder)
                if stored is not None:
                    for i in takers:
                        out[i].append(replace(item, key=stored.key))
        return out


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
                      exempt=parse_networks(cfg["mx.sender_auth_exempt"]),
                      trusted_sealers=list(cfg["mx.arc_trusted_sealers"]))


def content_filter(cfg: Config, resolver: Resolver) -> ContentFilter:
    """The MX's milters and rspamd (``mx.milter*``, ``mx.rspamd*``); inactive when none is configured."""
    rspamd = RspamdClient(cfg["mx.rspamd_url"], cfg["mx.rspamd_timeout"]) if cfg["mx.rspamd_url"] else None
    timeouts = MilterTimeouts(cfg["mx.milter_connect_timeout"], cfg["mx.milter_command_timeout"],
                              cfg["mx.milter_content_timeout"])
    return ContentFilter(cfg.hostname, cfg.hostname, milters=[parse_milter(m) for m in cfg["mx.milters"]],
                         milter_default_action=cfg["mx.milter_default_action"], timeouts=timeouts, rspamd=rspamd,
                         rspamd_default_action=cfg["mx.rspamd_default_action"],
                         thresholds=tenant_thresholds(resolver))


async def run_smtpd(ctx: WorkerContext) -> int:
    cfg = ctx.cfg
    hold_lines_per_turn()  # several lines per message: written together, before each reply (dovetail.log)
    rt = Runtime(cfg)
    resolver = configure_dns(cfg)
    auth = sender_auth(cfg, resolver)
    record = flow_counters(rt)
    # Rates are counted across the smtpd workers (a run/ file); greylist triplets live in the database.
    rates = RatePolicy(rate_limits(cfg), shared_windows(rt.layout.run), record=record, hostname=cfg.hostname)
    greylist = Greylist(rt.engine, GreylistSettings.from_config(cfg))
    backend = MxBackend(rt.resolver, rt.queue, over_quota=cfg["smtp.over_quota"], record=record,
                        auth=auth, content=content_filter(cfg, rt.resolver), rates=rates, greylist=greylist,
                        direct=direct_delivery(cfg, rt, record))
    limits = mx_limits(cfg)
    if ctx.spec.max_connections:
        limits = replace(limits, max_connections=ctx.spec.max_connections)
    screen = mx_screen(cfg, resolver, rt.layout.run, greylist)
    servers = []
    for sock in ctx.sockets:
        server = SmtpServer(backend, limits, hostname=cfg.hostname, ssl_context=ctx.ssl_context, listener="mx",
                            screen=screen)
        await server.start(sock=sock)
        servers.append(server)
    # One worker keeps the greylist bounded; the master itself holds no database work.
    purger = asyncio.create_task(purge_greylist(greylist)) if ctx.index == 0 else None

    async def stop_all(grace: float) -> None:
        if purger is not None:
            purger.cancel()
        await asyncio.gather(*(s.stop(grace) for s in servers))

    def screening_stats() -> dict:
        return {"screen": dict(screen.counts), "stressed": any(s.stressed for s in servers),
                "evicted": sum(s.evicted for s in servers)}

    return await supervise_listeners(ctx, servers, stop_all, screening_stats)


def direct_delivery(cfg: Config, rt: Runtime, record) -> DirectDelivery | None:  # noqa: ANN001
    """``mx.direct_delivery``: the MX commits all-local messages with the local agent lmtpd and the queue use."""
    if not cfg["mx.direct_delivery"]:
        return None
    interval = cfg["directory.cache_check_interval"]
    routes = Transports(rt.engine, interval)
    return DirectDelivery(local_agent(cfg, rt, record), here=cfg["node.name"], lmtp_rule=routes.lmtp_for,
                          check_interval=interval)


GREYLIST_PURGE_INTERVAL = 600.0


async def purge_greylist(greylist: Greylist, interval: float = GREYLIST_PURGE_INTERVAL) -> None:
    """Forget expired greylist triplets and clients every ``interval`` seconds (an indexed range delete)."""
    log = get_logger("smtpd")
    while True:
        try:
            triplets, clients = await asyncio.to_thread(greylist.purge)
            if triplets or clients:
                log.info(f"greylist purge: {triplets} triplets, {clients} clients expired")
        except Exception as exc:  # a busy or missing database: try again next time
            log.warning("greylist purge failed", error=repr(exc))
        await asyncio.sleep(interval)


async def run_submission(ctx: WorkerContext) -> int:
    """587 with STARTTLS and 465 with implicit TLS; AUTH only over TLS unless the client is trusted."""
    cfg = ctx.cfg
    rt = Runtime(cfg)
    # Failed logins are counted across the workers of the service, not per process. Suppressed recipients
    # are looked up in the replies engine's list (as the send API does) and reported to its event sink.
    bridge = outbound_events(rt.engine, cfg)
    backend = SubmissionBackend(rt.engine, rt.queue, penalty=shared_penalty(rt.layout.run, engine=rt.engine),
                                suppressions=bridge,
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
    # What the master preloaded lives as long as the worker: out of the garbage collector's sight,
    # a collection scans only what the sessions allocate (with some 180,000 preloaded objects
    # scanned, collections took half the CPU of a first SELECT of 10,000 messages), and the
    # collector no longer writes to the pages the worker shares with the master.
    gc.freeze()
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
                             limits.auth_fail_lockout, limits.auth_fail_window, engine=rt.engine)
    # Connections per IP and per user, across the workers (and the nodes of a PostgreSQL cluster).
    slots = counted_slots(rt.layout.run, "imapd", engine=rt.engine, node=cfg["node.name"] or socket.gethostname())
    # In a cluster, a login homed on another node is proxied there (mailauth.homes decides, imap.proxy moves bytes).
    homes = (LoginHomes(NodeStore(rt.engine), cfg["node.name"], cfg["cluster.secret"],
                        cfg["directory.cache_check_interval"], replays=shared_replays(rt.layout.run))
             if cfg["node.name"] else None)
    servers = []
    imaps = cfg["listen.imaps"]
    for sock, address in zip(ctx.sockets, ctx.spec.listen, strict=False):
        implicit = bool(imaps) and address == imaps and ctx.ssl_context is not None
        server = ImapServer(auth, storage_with_special_use, limits=limits, ssl_context=ctx.ssl_context,
                            implicit_tls=implicit, trusted_networks=cfg["auth.trusted_networks"],
                            penalty=penalty, slots=slots, homes=homes)
        await server.start(sock=sock)
        servers.append(server)

    watcher = asyncio.create_task(_end_sessions_of_moving_tenants(cfg, rt, servers)) if cfg["node.name"] else None

    async def stop_all(grace: float) -> None:
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(s.stop(grace) for s in servers))

    return await supervise_listeners(ctx, servers, stop_all)


async def _end_sessions_of_moving_tenants(cfg: Config, rt: Runtime, servers: list[ImapServer]) -> None:
    """In a cluster: once a tenant's move pauses it, its IMAP sessions here get BYE (checked every
    ``directory.cache_check_interval``), so that nothing they change after the final sync is left behind."""
    interval = max(0.2, float(cfg["directory.cache_check_interval"]))
    while True:
        await asyncio.sleep(interval)
        try:
            paused = await asyncio.to_thread(rt.directory.paused_tenants)
        except Exception as exc:  # noqa: BLE001 - the database may be away a moment; try on the next tick
            get_logger("imapd").warning("could not read paused tenants", error=repr(exc))
            continue
        if paused:
            for server in servers:
                ended = server.disconnect(paused, "Mailbox is being moved to another node.")
                if ended:
                    get_logger("imapd").info(f"ended {ended} session(s) of moving tenant(s) "
                                             f"{', '.join(sorted(paused))}")


def local_agent(cfg: Config, rt: Runtime, record):  # noqa: ANN001, ANN201
    """The Maildir agent as both the queue and lmtpd deliver with it: quotas as configured, deliveries to
    reply inboxes handed over to the replies pipeline and to report intakes to the report reader,
    outcomes counted for the dashboard."""
    maildir = MaildirDeliveryAgent(mailbox_targets(rt.resolver),
                                   MaildirConfig(quota_bounce=cfg["smtp.over_quota"] == "reject"))
    return CountingAgent(RepliesHandOver(maildir, rt.resolver, local_delivery(rt.engine, cfg),
                                         reports_delivery(rt.engine, rt.layout.mail)), record)


async def run_lmtpd(ctx: WorkerContext) -> int:
    """LMTP for mailbox nodes (and Postfix's ``virtual_transport = lmtp:...``): each recipient committed into
    its Maildir before its reply; TCP clients only from ``lmtp.allowed_networks``."""
    cfg = ctx.cfg
    rt = Runtime(cfg)
    record = flow_counters(rt)
    backend = LmtpBackend(rt.resolver, local_agent(cfg, rt, record), over_quota=cfg["smtp.over_quota"],
                          spool_dir=rt.queue.root / "tmp", record=record, here=cfg["node.name"])
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


def lmtp_nexthop(routes: Transports, home: HomeNodes | None = None):  # noqa: ANN201
    """The LMTP agent's ``nexthop_for``: the lmtp rule of a recipient as a nexthop, else the LMTP address
    of the other cluster node its mailbox is homed on (None: neither now)."""

    def nexthop_for(address: str) -> Nexthop | None:
        rule = routes.lmtp_for(address)
        if rule is None:
            target = home.lmtp_for(address) if home is not None else None
            if target is None:
                return None
            host, _, port = target.rpartition(":")
            return Nexthop(host=host.strip("[]"), port=int(port))
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
    home = HomeNodes(rt.resolver, NodeStore(rt.engine), cfg["node.name"], cfg["directory.cache_check_interval"])
    pool = LmtpPool(cfg.hostname, idle_timeout=cfg["lmtp.connection_cache_time"],
                    per_destination=cfg["lmtp.destination_concurrency"])
    lmtp = LmtpDeliveryAgent(lmtp_nexthop(routes, home), cfg.hostname, pool=pool)
    agents = {"virtual": local_agent(cfg, rt, record), "smtp": CountingAgent(outbound, record),
              "lmtp": CountingAgent(lmtp, record)}

    manager = QueueManager(rt.queue, agents, qcfg, transport_for=transport_chooser(rt.resolver, routes.lmtp_for, home),
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
    lmtp.close()
    await outbound.close()
    return 0


def _outbound_agent(cfg: Config, rt: Runtime, qcfg: QueueConfig, processes: int = 1) -> OutboundAgent:
    """The relay/direct-MX agent with DKIM signing; its results feed the replies engine's events.
    ``processes`` queue managers share the per-destination limits (see outbound.shaping)."""
    events = outbound_events(rt.engine, cfg)
    transports = Transports(rt.engine, cfg["directory.cache_check_interval"],
                            sealer=credentials_sealer(cfg.data_dir, rt.engine))
    keys = DkimKeys(rt.engine, rt.layout.dkim)
    dane = cfg["outbound.dane"] == "on"
    # With DANE the MX lookups go through the validating resolver too: the MX RRset's AD bit decides.
    mx = MxResolver(validating_resolver(cfg["outbound.dane_resolver"] or cfg["dns.nameservers"],
                                        cfg["dns.timeout"]) if dane else None)
    srs = Srs.for_data_dir(cfg.data_dir, engine=rt.engine) if cfg["forwarding.srs"] else None
    forwarder = Forwarder(srs=srs, keys=keys,
                          authserv_id=cfg.hostname, txt=dnspython_txt(mx.resolver), arc_seal=cfg["forwarding.arc_seal"])
    return OutboundAgent(transports, keys,
                         AgentConfig(hostname=cfg.hostname, shaping=ShapingConfig.from_config(cfg, processes),
                                     schedule=qcfg, dane=dane),
                         mx=mx, events=events, forwarder=forwarder)


async def _publish_shaping(agent: OutboundAgent, path: Path, interval: float = 1.0) -> None:
    """Per-destination counters, pauses and sessions of this process, for ``/metrics``."""
    while True:
        await asyncio.to_thread(agent.shaper.publish, path)
        await asyncio.sleep(interval)


async def _serve_asgi(ctx: WorkerContext, app: Any, groups: list[tuple[list[socket.socket], ssl.SSLContext | None]],
                      what: str) -> int:
    """Serve ``app`` with one uvicorn server per group of sockets (uvicorn applies one SSL setting to all its
    sockets), report ready once each listens, and stop them all within the worker's grace."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    for socks, tls in groups:
        if not socks:
            continue
        config = uvicorn.Config(app, log_config=None, access_log=True, lifespan="off" if servers else "on",
                                timeout_graceful_shutdown=int(ctx.grace))
        if tls is not None:
            config.load()
            config.ssl = tls  # the SNI context of the worker, not one uvicorn would build from files
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the worker owns SIGTERM
        servers.append((server, asyncio.create_task(server.serve(sockets=socks))))
    for server, task in servers:
        while not server.started:  # uvicorn sets a flag, no event, once it listens
            if task.done():
                task.result()  # raises why it could not start, if it raised
                raise RuntimeError(f"the {what} did not start (its startup failed: see the log)")
            await asyncio.sleep(0.05)
    ctx.ready()

    async def stop_all(grace: float) -> None:
        for server, _task in servers:
            server.should_exit = True
        for _server, task in servers:
            try:
                await asyncio.wait_for(task, grace + 5)
            except TimeoutError:
                task.cancel()

    class _Counts:
        @property
        def active_connections(self) -> int:
            return sum(len(server.server_state.connections) for server, _task in servers)

    return await supervise_listeners(ctx, [_Counts()], stop_all)


async def run_web(ctx: WorkerContext) -> int:
    """Plain HTTP on ``listen.http`` (and ``acme.http01_listen``), HTTPS with SNI on ``listen.https``: one
    application, one uvicorn server per kind of socket."""
    from ..web.app import create_app

    cfg = ctx.cfg
    # The master migrated the database before the fork; Alembic's scripts are not read again here.
    app = create_app(cfg, make_engine(cfg.database_url))
    https = cfg["listen.https"]
    plain = [s for s, a in zip(ctx.sockets, ctx.spec.listen, strict=False) if not https or a != https]
    secure = [s for s, a in zip(ctx.sockets, ctx.spec.listen, strict=False) if https and a == https]
    if secure and ctx.ssl_context is None:
        raise RuntimeError("listen.https is set but there is no certificate (tls.cert or the store)")
    return await _serve_asgi(ctx, app, [(plain, None), (secure, ctx.ssl_context)], "web server")


async def run_transfer(ctx: WorkerContext) -> int:
    """The transfer endpoint of a mailbox node (``listen.transfer``): tenant moves pull Maildirs from it."""
    from ..move.endpoint import transfer_app

    cfg = ctx.cfg
    app = transfer_app(make_engine(cfg.database_url), Layout(cfg.data_dir).mail, cfg["node.name"],
                       cfg["cluster.secret"])
    return await _serve_asgi(ctx, app, [(list(ctx.sockets), None)], "transfer endpoint")


async def run_certs(ctx: WorkerContext) -> int:
    """The periodic certificate job: obtain what ``acme.auto`` wants, renew what is due (see certs.renew)."""
    cfg = ctx.cfg
    ctx.ready()
    interval = float(cfg["acme.check_interval"])
    while not ctx.stop.is_set():
        try:
            await asyncio.to_thread(certs_pass, cfg)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again; the log says why
            get_logger("certs").error("certificate pass failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), interval)
    return 0


def certs_pass(cfg: Config) -> None:
    from ..certs.renew import certs_renewer, wanted_names

    renewer = certs_renewer(cfg)
    if cfg["acme.auto"]:
        engine = make_engine(cfg.database_url)
        try:
            domains = [d.name for d in Directory(engine).domain_list() if d.enabled]
        finally:
            engine.dispose()
        renewer.obtain_missing(wanted_names(cfg.hostname, domains, cfg["acme.autoconfig"]))
    renewer.renew()


async def run_replies(ctx: WorkerContext) -> int:
    """IMAP sources of reply inboxes hosted elsewhere, and the durable webhook dispatcher."""
    return await replies_main(ctx.cfg, ctx.stop, ready=ctx.ready)


RUNNERS: dict[str, Runner] = {"smtpd": run_smtpd, "submission": run_submission, "imapd": run_imapd,
                              "qmgr": run_qmgr, "web": run_web, "replies": run_replies, "certs": run_certs,
                              "lmtpd": run_lmtpd, "transfer": run_transfer}

