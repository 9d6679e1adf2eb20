"""SNI: every TLS listener picks the certificate by the server name the client asks for.

One ``SSLContext`` per stored certificate; the listeners are given a *default* context whose
``sni_callback`` switches each handshake to the context of the name asked (exact name, then the
wildcard one level up), else the server hostname's, else the self-signed pair of ``dovetail init``
(which the default context itself carries, so a name we do not serve, or no name at all, is answered
with it and never fails the handshake). The callback is called for every handshake, with or without
SNI, so the default context stays the same object while the store behind it is loaded again when
its generation file moved (checked at most once a second): renewed certificates serve new
handshakes without a restart.

On the web listener the callback also answers TLS-ALPN-01 (RFC 8737): while an order is being
validated, a challenge certificate for the name sits in ``tls/acme/tls-alpn-01/`` and that name's
handshakes get it, with ``acme-tls/1`` as the only ALPN protocol.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..log import get_logger
from .store import CertStore

ACME_TLS_ALPN = "acme-tls/1"

log = get_logger("tls")


def _context(chain: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, key)
    return ctx


class SniContexts:
    """The listener's default context and the per-certificate contexts behind it."""

    def __init__(self, store: CertStore, hostname: str, fallback: tuple[Path, Path] | None,
                 alpn_challenges: Path | None = None, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.hostname = hostname.lower().rstrip(".")
        self.alpn_challenges = alpn_challenges
        self.check_interval = check_interval
        self.clock = clock
        self.default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.has_fallback = False
        if fallback is not None and fallback[0].exists() and fallback[1].exists():
            self.default.load_cert_chain(*fallback)
            self.has_fallback = True
        self.by_name: dict[str, ssl.SSLContext] = {}
        self._generation: str | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self.refresh(force=True)
        self.default.sni_callback = self._pick

    @property
    def usable(self) -> bool:
        """Whether any handshake can succeed (a fallback pair, or at least one stored certificate)."""
        return self.has_fallback or bool(self.by_name)

    def refresh(self, force: bool = False) -> bool:
        """Load the store again if its generation moved (checked at most every ``check_interval``);
        True when it was loaded. A certificate that cannot be loaded is left out, with a log line."""
        now = self.clock()
        if not force and now - self._checked < self.check_interval:
            return False
        with self._lock:
            self._checked = now
            generation = self.store.generation()
            if not force and generation == self._generation:
                return False
            by_name: dict[str, ssl.SSLContext] = {}
            for info in self.store.list():
                try:
                    ctx = _context(self.store.chain_path(info.id), self.store.key_path(info.id))
                except (OSError, ssl.SSLError) as exc:
                    log.error("certificate cannot be loaded, not served", cert=info.id, error=str(exc))
                    continue
                for name in info.names:
                    by_name.setdefault(name, ctx)
            self.by_name = by_name
            if self._generation is not None:
                log.info("certificates reloaded", certificates=len(by_name), generation=generation or "-")
            self._generation = generation
            return True

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context a handshake for ``server_name`` gets (``default`` when nothing matches)."""
        names = self.by_name
        if server_name:
            name = server_name.lower().rstrip(".")
            found = names.get(name)
            if found is None and "." in name:
                found = names.get("*." + name.split(".", 1)[1])
            if found is not None:
                return found
        return names.get(self.hostname, self.default)

    def _challenge(self, server_name: str | None) -> ssl.SSLContext | None:
        if self.alpn_challenges is None or not server_name:
            return None
        path = self.alpn_challenges / f"{server_name.lower().rstrip('.')}.pem"
        if "/" in server_name or not path.exists():
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(path)
        ctx.set_alpn_protocols([ACME_TLS_ALPN])
        return ctx

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
              _ctx: ssl.SSLContext) -> int | None:
        try:
            self.refresh()
            chosen = self._challenge(server_name) or self.context_for(server_name)
            if chosen is not self.default:
                sslobj.context = chosen
        except Exception as exc:  # noqa: BLE001 - a bad name or file must not fail the handshake
            log.warning("SNI selection failed, serving the default certificate", name=server_name or "-",
                        error=str(exc))
        return None


def listener_context(store: CertStore, hostname: str, fallback: tuple[Path, Path] | None,
                     alpn_challenges: bool = False) -> ssl.SSLContext | None:
    """The default context for a TLS listener, or None when there is no certificate at all."""
    sni = SniContexts(store, hostname, fallback,
                      alpn_challenges=store.acme_dir / "tls-alpn-01" if alpn_challenges else None)
    return sni.default if sni.usable else None
