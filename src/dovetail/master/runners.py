"""What each service runs inside its worker: the composition root of Dovetail's processes.

Every runner builds its own runtime (database engine, caches) after the fork, starts its servers
on the sockets the master bound, and returns an exit status when told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor

from ..config import Config
from ..log import get_logger
from ..runtime import Runtime
from .worker import Runner, WorkerContext, supervise_listeners


def smtp_limits(cfg: Config):  # noqa: ANN201
    from ..smtp.limits import Limits

    return Limits(max_message_size=cfg["smtp.max_message_size"], max_recipients=cfg["smtp.max_recipients"],
                  max_command_line=cfg["smtp.max_command_length"], max_line_length=cfg["smtp.max_line_length"],
                  max_errors=cfg["smtp.hard_error_limit"], max_connections=cfg["smtp.max_connections"],
                  max_connections_per_ip=cfg["smtp.max_connections_per_ip"],
                  idle_timeout=cfg["smtp.idle_timeout"], data_timeout=cfg["smtp.data_timeout"],
                  bare_lf=cfg["smtp.bare_lf"])


def imap_limits(cfg: Config):  # noqa: ANN201
    from ..imap.limits import Limits

    return Limits(max_literal=cfg["imap.max_literal_size"],
                  max_connections_per_user=cfg["imap.max_connections_per_user"],
                  max_connections_per_ip=cfg["imap.max_connections_per_ip"],
                  idle_timeout=cfg["imap.autologout"])


def flow_counters(rt: Runtime):  # noqa: ANN201
    """The dashboard's mail-flow ``record`` function, flushed to the database by a thread in this process."""
    try:
        from ..web import counters
    except ImportError:
        return lambda counter, n=1: None
    counters.start_flusher(rt.engine, 5.0)
    return counters.record


class RepliesHandOver:
    """Wraps the Maildir agent: each message it delivered to a reply inbox goes to the replies pipeline.

    The file is found by its deterministic name (queue id and recipient index), so the delivery code
    needs no knowledge of the replies engine.
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
        from ..delivery.maildir import delivery_name, find_delivered

        for rcpt in recipients:
            base = delivery_name(message.envelope.arrival, message.queue_id, rcpt.index)
            for target in self.resolver.resolve(rcpt.address).mailboxes:
                path = find_delivered(target.maildir, base)
                if path is not None:
                    self.hand_over(target.tenant, target.address, path)


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


async def run_smtpd(ctx: WorkerContext) -> int:
    from ..intake.mx import MxBackend
    from ..smtp.server import SmtpServer

    cfg = ctx.cfg
    rt = Runtime(cfg)
    backend = MxBackend(rt.resolver, rt.queue, over_quota=cfg["smtp.over_quota"], record=flow_counters(rt))
    limits = smtp_limits(cfg)
    if ctx.spec.max_connections:
        from dataclasses import replace

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
    from ..outbound.submission import SubmissionBackend
    from ..smtp.server import SmtpServer

    cfg = ctx.cfg
    rt = Runtime(cfg)
    from ..mailauth.failures import shared_penalty

    # Failed logins are counted across the workers of the service, not per process.
    backend = SubmissionBackend(rt.engine, rt.queue, penalty=shared_penalty(rt.layout.run))
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
    from ..mailauth.networks import in_networks, parse_networks

    nets = parse_networks(networks)
    return lambda client_ip: in_networks(client_ip, nets)


_SPECIAL_USE_DONE: set[str] = set()  # mail roots this process already gave their special-use folders


def storage_with_special_use(account):  # noqa: ANN001, ANN201
    """A user's storage, with Sent, Drafts, Trash, Junk and Archive created at the first login (once
    per root and process: later logins skip the checks and the subscriptions rewrite)."""
    from ..storage import open_storage

    storage = open_storage(account.mail_root)
    root = str(account.mail_root)
    if root not in _SPECIAL_USE_DONE:
        storage.ensure_special_use()
        _SPECIAL_USE_DONE.add(root)
    return storage


async def run_imapd(ctx: WorkerContext) -> int:
    from ..imap.server import ImapServer
    from ..mailauth.login import DirectoryAuthenticator

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
    from ..mailauth.failures import shared_penalty

    # Failed logins are counted across the workers of the service, not per process.
    penalty = shared_penalty(rt.layout.run, limits.auth_fail_base_delay, limits.auth_fail_max_delay,
                             limits.auth_fail_lockout, limits.auth_fail_window)
    from ..slots import shared_slots

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


async def run_qmgr(ctx: WorkerContext) -> int:
    from ..delivery.agent import MaildirConfig, MaildirDeliveryAgent
    from ..intake.local import mailbox_targets, transport_chooser
    from ..queue import QueueConfig, QueueManager

    cfg = ctx.cfg
    rt = Runtime(cfg)
    local = MaildirDeliveryAgent(mailbox_targets(rt.resolver),
                                 MaildirConfig(quota_bounce=cfg["smtp.over_quota"] == "reject"))
    qcfg = QueueConfig(minimal_backoff=cfg["queue.minimal_backoff"], maximal_backoff=cfg["queue.maximal_backoff"],
                       maximal_queue_lifetime=cfg["queue.maximal_lifetime"],
                       bounce_queue_lifetime=cfg["queue.bounce_lifetime"],
                       max_concurrent_deliveries=cfg["queue.delivery_concurrency"], hostname=cfg.hostname)

    record = flow_counters(rt)
    try:
        from ..replies.hooks import local_delivery

        local = RepliesHandOver(local, rt.resolver, local_delivery(rt.engine, cfg))
    except ImportError:
        pass
    agents = {"virtual": CountingAgent(local, record)}
    outbound = _outbound_agent(cfg, rt)
    if outbound is not None:
        agents["smtp"] = CountingAgent(outbound, record)

    manager = QueueManager(rt.queue, agents, qcfg, transport_for=transport_chooser(rt.resolver))
    task = asyncio.create_task(manager.run())
    stopped = asyncio.create_task(ctx.stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        get_logger("qmgr").error("queue manager ended", error=repr(task.exception()))
        return 1
    manager.stop()
    try:
        await asyncio.wait_for(task, ctx.grace)
    except TimeoutError:
        task.cancel()
    if outbound is not None:
        await outbound.close()
    return 0


def _outbound_agent(cfg: Config, rt: Runtime):  # noqa: ANN202
    """The relay/direct-MX agent with DKIM signing, when the outbound package is present."""
    try:
        from ..outbound import AgentConfig, DkimKeys, OutboundAgent, Transports
    except ImportError:
        return None
    events = None
    try:
        from ..replies.hooks import outbound_events

        events = outbound_events(rt.engine, cfg)
    except ImportError:
        pass
    from ..sealing import Sealer

    transports = Transports(rt.engine, sealer=Sealer.for_data_dir(cfg.data_dir))
    return OutboundAgent(transports, DkimKeys(rt.engine, rt.layout.dkim),
                         AgentConfig(hostname=cfg.hostname), events=events)


async def run_web(ctx: WorkerContext) -> int:
    import uvicorn

    from ..web.app import create_app

    cfg = ctx.cfg
    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, lifespan="on",
                                           timeout_graceful_shutdown=int(ctx.grace)))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # the worker owns SIGTERM
    task = asyncio.create_task(server.serve(sockets=ctx.sockets))

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
    from ..replies.runner import run_replies as run

    return await run(ctx.cfg, ctx.stop)


RUNNERS: dict[str, Runner] = {"smtpd": run_smtpd, "submission": run_submission, "imapd": run_imapd,
                              "qmgr": run_qmgr, "web": run_web, "replies": run_replies}

_MODULES = {"smtpd": "dovetail.smtp.server", "submission": "dovetail.outbound.submission",
            "imapd": "dovetail.imap.server", "qmgr": "dovetail.queue.manager", "web": "dovetail.web.app",
            "replies": "dovetail.replies.runner"}


def available(name: str) -> bool:
    """Whether this build has the service (its module exists and a runner is registered)."""
    module = _MODULES.get(name)
    if name not in RUNNERS or module is None:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False
