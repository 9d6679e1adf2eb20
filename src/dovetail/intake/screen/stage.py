"""The MX's screening stage: what postscreen does before smtpd, decided per connection.

It runs inside the MX worker, in front of the SMTP session of the same connection, rather than as a
process of its own handing sockets over: a waiting client costs one asyncio protocol object either
way, and the hand-over (a Unix socket, SCM_RIGHTS, a second accept path) would add a process to
supervise and a failure mode without saving anything. What postscreen shares between its processes
(the cache of clients that passed) is shared here through a file in ``run/`` (:mod:`.cache`).

Order, as postscreen's: the deny list refuses at once (``DENYLISTED``), the allow list skips every
test (``ALLOWLISTED``), a client that passed within ``cache_ttl`` skips them too (``PASS OLD``).
Anyone else gets the first line of a multi-line banner (``220-``) and ``greet_wait`` seconds of
silence from us while the DNSBL/DNSWL sites are asked; a client that talks in that time is a
``PREGREET`` (a real MTA waits for the whole banner), one whose weighted DNSBL score reaches the
threshold a ``DNSBL rank N``. The rest ``PASS NEW`` and are remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ...log import get_logger
from ...mailauth.dns import Resolver
from ...mailauth.networks import Network, in_networks
from ...smtp.reply import Reply
from ...smtp.screening import Refusal, ScreenPeer
from .cache import Entry, ScreenCache
from .dnsbl import lookup
from .sites import Score, Site

log = get_logger("screen")

DECISIONS = ("pass_new", "pass_old", "allowlisted", "denylisted", "pregreet", "dnsbl", "hangup")
STRESS_GREET_WAIT = 2.0  # postscreen_greet_wait under stress


@dataclass(frozen=True)
class ScreenConfig:
    greet_wait: float = 6.0
    pregreet_action: Literal["reject", "drop"] = "reject"
    sites: tuple[Site, ...] = ()
    threshold: int = 1
    dnsbl_action: Literal["reject", "defer"] = "reject"
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    cache_ttl: float = 86400.0
    dnsbl_ttl: float = 3600.0
    dns_timeout: float = 5.0


@dataclass
class MxScreen:
    """The stage the MX listener runs for each connection (``dovetail.smtp.screening.Screen``)."""

    config: ScreenConfig
    cache: ScreenCache | None = None
    resolver: Resolver | None = None
    counts: Counter[str] = field(default_factory=Counter)
    # Called (in a thread) with the address of a client whose DNSWL weights outweigh its DNSBL ones:
    # the greylist lets such a client through from now on, as postgrey does for well-known senders.
    on_allowlisted: Callable[[str], object] | None = None

    def _decided(self, decision: str) -> None:
        self.counts[decision] += 1

    async def _entry(self, ip: str) -> Entry | None:
        if self.cache is None:
            return None
        try:
            return await asyncio.to_thread(self.cache.get, ip)
        except Exception as exc:  # a broken cache costs a greet wait, never the connection
            log.warning(f"screening cache unreadable: {exc}")
            return None

    async def _record(self, ip: str, verdict: str, detail: str = "", **kw: float | int | None) -> None:
        if self.cache is None:
            return
        try:
            await asyncio.to_thread(self.cache.record, ip, verdict, detail, **kw)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning(f"screening cache not written: {exc}")

    async def screen(self, peer: ScreenPeer) -> Refusal | None:
        cfg = self.config
        ip, where = peer.client_ip, f"[{peer.client_ip}]:{peer.client_port}"
        if in_networks(ip, cfg.deny):
            log.info(f"DENYLISTED {where}")
            self._decided("denylisted")
            await self._record(ip, "DENYLISTED")
            return Refusal(Reply(554, "5.7.1", f"Service unavailable; client [{ip}] blocked using deny list"),
                           at_greeting=True)
        if in_networks(ip, cfg.allow):
            log.info(f"ALLOWLISTED {where}")
            self._decided("allowlisted")
            return None
        started = time.monotonic()
        now = time.time()
        entry = await self._entry(ip)
        if entry is not None and entry.passed(now):
            log.info(f"PASS OLD {where}")
            self._decided("pass_old")
            return None
        cached: Score | None = None
        task: asyncio.Task[Score] | None = None
        if cfg.sites:
            if entry is not None and entry.dnsbl_fresh(now) and entry.score is not None:
                cached = Score(entry.score, [entry.detail] if entry.detail else [])
            elif self.resolver is not None:
                task = asyncio.create_task(lookup(self.resolver, cfg.sites, ip))
        try:
            log.info(f"CONNECT from {where}")
            wait = min(cfg.greet_wait, STRESS_GREET_WAIT) if peer.stressed else cfg.greet_wait
            if wait > 0:
                peer.banner_start()
                await peer.wait_for_input(wait)
            if peer.early_input:
                return await self._pregreet(peer, where, time.monotonic() - started)
            if peer.hung_up:
                log.info(f"HANGUP after {time.monotonic() - started:.2g} from {where} in tests before SMTP handshake")
                self._decided("hangup")
                return Refusal(None)
            result = cached
            if task is not None:
                try:
                    result = await asyncio.wait_for(task, cfg.dns_timeout + 1.0)
                except TimeoutError:
                    log.info(f"warning: dnsbl lookups for {where} did not finish in time: not counted")
            fresh = task is not None and result is not None
        finally:
            if task is not None and not task.done():
                task.cancel()
        score = result.total if result is not None else None
        detail = result.detail() if result is not None else ""
        dnsbl_until = now + cfg.dnsbl_ttl if fresh else None
        if result is not None and result.total >= cfg.threshold:
            log.info(f"DNSBL rank {result.total} for {where}" + (f" ({detail})" if detail else ""))
            self._decided("dnsbl")
            await self._record(ip, "DNSBL", detail, score=score, dnsbl_until=dnsbl_until, pass_until=0.0)
            listed_by = result.hits[0].split("*")[0] if result.hits else "DNSBL"
            if cfg.dnsbl_action == "defer":
                return Refusal(Reply(421, "4.7.1", f"Service unavailable; client [{ip}] blocked using {listed_by}"))
            return Refusal(Reply(550, "5.7.1", f"Service unavailable; client [{ip}] blocked using {listed_by}"))
        if result is not None and result.total < 0 and self.on_allowlisted is not None:
            try:
                await asyncio.to_thread(self.on_allowlisted, ip)
            except Exception as exc:  # the greylist's store away costs a greylisting, never the connection
                log.warning(f"DNSWL client not allowlisted: {exc}")
        log.info(f"PASS NEW {where}")
        self._decided("pass_new")
        await self._record(ip, "PASS", detail, score=score, dnsbl_until=dnsbl_until, pass_until=now + cfg.cache_ttl)
        return None

    async def _pregreet(self, peer: ScreenPeer, where: str, after: float) -> Refusal:
        early = peer.early_input
        shown = early[:100].decode("latin-1").encode("unicode_escape").decode("ascii")
        log.info(f"PREGREET {len(early)} after {after:.2g} from {where}: {shown}")
        self._decided("pregreet")
        await self._record(peer.client_ip, "PREGREET", shown, pass_until=0.0)
        if self.config.pregreet_action == "drop":
            return Refusal(None)
        return Refusal(Reply(550, "5.5.1", "Protocol error"))
