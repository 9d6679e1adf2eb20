"""Renewal: which certificates are due, with backoff after failures; what names are wanted.

A certificate is renewed at two thirds of its lifetime. A failed order (CA down, rate limit, challenge
refused) is retried after ``acme.retry_base``, doubling per failure up to ``acme.retry_max``; the old
certificate keeps serving meanwhile, and its status says how many attempts failed and why.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..log import get_logger
from .order import AcmeOrders, AcmeSettings, OrderFailed
from .store import CertInfo, CertStore, RenewalState

log = get_logger("certs")


@dataclass(frozen=True)
class Outcome:
    cert_id: str
    names: tuple[str, ...]
    ok: bool
    message: str
    info: CertInfo | None = None


def backoff(failures: int, base: float, cap: float) -> float:
    return float(min(cap, base * 2 ** max(0, failures - 1)))


def wanted_names(hostname: str, domains: Iterable[str], autoconfig: bool) -> list[list[str]]:
    """The certificates ``acme.auto`` keeps: the hostname's, and one per domain for its client names."""
    out = [[hostname]] if hostname and "." in hostname else []
    for domain in domains:
        names = [f"mail.{domain}", f"mta-sts.{domain}"] + ([f"autoconfig.{domain}"] if autoconfig else [])
        out.append(names)
    return out


class Renewer:
    """Orders and renews into a store, recording each certificate's attempts."""

    def __init__(self, store: CertStore, orders: AcmeOrders, challenge: str, retry_base: float = 600.0,
                 retry_max: float = 86400.0) -> None:
        self.store, self.orders, self.challenge = store, orders, challenge
        self.retry_base, self.retry_max = retry_base, retry_max

    def attempt(self, cert_id: str, names: list[str], challenge: str | None = None,
                new_key: bool = False) -> Outcome:
        """One order, its result recorded (success clears the failures; a failure schedules the next try)."""
        state = self.store.state(cert_id)
        state.last_attempt = time.time()
        try:
            info = self.orders.issue(names, challenge or self._challenge_of(cert_id), cert_id=cert_id,
                                     new_key=new_key)
        except OrderFailed as exc:
            state.failures += 1
            state.last_error = str(exc)
            state.next_try = time.time() + backoff(state.failures, self.retry_base, self.retry_max)
            self.store.set_state(cert_id, state)
            log.warning("certificate order failed", cert=cert_id, names=",".join(names), failures=state.failures,
                        retry_in=f"{state.next_try - time.time():.0f}s", error=str(exc))
            return Outcome(cert_id, tuple(names), False, str(exc))
        self.store.set_state(cert_id, RenewalState(last_attempt=state.last_attempt, last_success=time.time()))
        log.info("certificate issued", cert=cert_id, names=",".join(info.names), issuer=info.issuer,
                 not_after=info.not_after.isoformat(), serial=info.serial)
        return Outcome(cert_id, info.names, True, f"issued, valid until {info.not_after:%Y-%m-%d}", info)

    def _challenge_of(self, cert_id: str) -> str:
        info = self.store.get(cert_id)
        return (info.challenge if info is not None and info.challenge else self.challenge)

    def due(self, now: dt.datetime | None = None) -> list[CertInfo]:
        """ACME certificates past two thirds of their lifetime and out of backoff."""
        now = now or dt.datetime.now(dt.UTC)
        states = self.store.states()
        out = []
        for info in self.store.list():
            if info.source != "acme" or now < info.renewal_due():
                continue
            state = states.get(info.id)
            if state is not None and state.failures and state.next_try > now.timestamp():
                continue
            out.append(info)
        return out

    def renew(self, force: bool = False, only: Iterable[str] = (), new_key: bool = False) -> list[Outcome]:
        """Renew what is due (everything ACME-issued with ``force``), or just the certificates ``only`` names."""
        wanted = set(only)
        pool = self.store.list() if force else self.due()
        pool = [c for c in pool if c.source == "acme" and (not wanted or c.id in wanted or wanted & set(c.names))]
        return [self.attempt(c.id, list(c.names), new_key=new_key) for c in pool]

    def obtain_missing(self, wanted: list[list[str]]) -> list[Outcome]:
        """Order the wanted name sets that no stored certificate covers yet (respecting backoff)."""
        out = []
        now = time.time()
        for names in wanted:
            if all(self.store.covering(n) is not None for n in names):
                continue
            state = self.store.state(names[0])
            if state.failures and state.next_try > now:
                continue
            out.append(self.attempt(names[0], names))
        return out


def certs_renewer(cfg: Any) -> Renewer:
    """The renewer of a data directory, as the CLI and the certs service use it."""
    store = CertStore.for_service(cfg.data_dir / "tls", cfg["server.user"])
    return Renewer(store, AcmeOrders(store, AcmeSettings.from_config(cfg)), cfg["acme.challenge"],
                   retry_base=cfg["acme.retry_base"], retry_max=cfg["acme.retry_max"])
