"""ACME (RFC 8555) orders with certbot's ``acme`` library: account, order, challenges, certificate.

One account per data directory and CA (``tls/acme/account.key``, RSA-2048, and ``account.json`` with
the account URL per directory URL). Every order gets a fresh P-256 key, so a renewal also rolls the key.
Failures of any kind (CA unreachable, rate limit, challenge refused) come out as ``OrderFailed`` with a
one-line reason; nothing is stored unless the certificate was issued.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..privileges import write_private_file
from . import preflight
from .challenges import ChallengeError, ChallengeFiles, run_dns_hook
from .store import CertInfo, CertStore

USER_AGENT = "dovetail-acme"
NETWORK_TIMEOUT = 20
VALIDATION_TIMEOUT = 60.0
CHALLENGES = ("http-01", "tls-alpn-01", "dns-01")


class OrderFailed(RuntimeError):
    """An order that did not give a certificate; the message says why in one line."""


class _EmptyResponse(challenges.ChallengeResponse):
    """The ``{}`` payload that tells the CA a challenge is ready (RFC 8555 §7.5.1)."""

    typ = "tls-alpn-01"

    def __bool__(self) -> bool:  # an empty mapping is falsy, and the client would send a POST-as-GET instead
        return True


@dataclass(frozen=True)
class AcmeSettings:
    directory_url: str
    email: str = ""
    ca_bundle: str = ""
    dns01_hook: str = ""
    public_addresses: tuple[str, ...] = ()
    http01_port: int = 80
    nameservers: tuple[str, ...] = ()
    dns_timeout: float = 5.0

    @classmethod
    def from_config(cls, cfg: Any) -> AcmeSettings:
        bundle = cfg["acme.ca_bundle"]
        if bundle and not Path(bundle).is_absolute():
            bundle = str(cfg.data_dir / bundle)
        return cls(directory_url=cfg["acme.directory_url"], email=cfg["acme.email"], ca_bundle=bundle,
                   dns01_hook=cfg["acme.dns01_hook"], public_addresses=tuple(cfg["acme.public_addresses"]),
                   http01_port=cfg["acme.http01_port"], nameservers=tuple(cfg["dns.nameservers"]),
                   dns_timeout=cfg["dns.timeout"])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, messages.Error):
        return f"{exc.typ.rsplit(':', 1)[-1] if exc.typ else 'error'}: {exc.detail or exc.title or exc}"
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    parts.append(f"{authzr.body.identifier.value}: {_reason(challb.error)}")
        return "challenge failed: " + ("; ".join(parts) or "the CA refused the authorization")
    if isinstance(exc, requests.ConnectionError):
        return "the CA cannot be reached (connection failed)"
    if isinstance(exc, requests.Timeout):
        return "the CA did not answer in time"
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish validating in time"
    return " ".join(str(exc).split()) or exc.__class__.__name__


class AcmeOrders:
    """Orders certificates into a store."""

    def __init__(self, store: CertStore, settings: AcmeSettings) -> None:
        self.store = store
        self.settings = settings
        self.files = ChallengeFiles(store.acme_dir, store.owner)

    # --- account ---------------------------------------------------------------------------------

    @property
    def account_key_path(self) -> Path:
        return self.store.acme_dir / "account.key"

    def _account_key(self) -> jose.JWKRSA:
        self.store.ensure_dirs()
        path = self.account_key_path
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            write_private_file(path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()), self.store.owner)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        return jose.JWKRSA(key=loaded)

    def _client(self) -> tuple[client.ClientV2, jose.JWKRSA]:
        key = self._account_key()
        verify: Any = self.settings.ca_bundle or True
        net = client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify, timeout=NETWORK_TIMEOUT)
        directory = client.ClientV2.get_directory(self.settings.directory_url, net)
        acme = client.ClientV2(directory, net=net)
        accounts_file = self.store.acme_dir / "account.json"
        try:
            accounts = json.loads(accounts_file.read_text())
        except (OSError, ValueError):
            accounts = {}
        contact = (f"mailto:{self.settings.email}",) if self.settings.email else ()
        registration = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(registration)
        except errors.ConflictError as exc:  # the key has an account there already
            regr = acme.query_registration(messages.RegistrationResource(uri=exc.location, body=registration))
            net.account = regr
        if accounts.get(self.settings.directory_url) != regr.uri:
            accounts[self.settings.directory_url] = regr.uri
            write_private_file(accounts_file, json.dumps(accounts, indent=2).encode(), self.store.owner)
        return acme, key

    # --- orders ----------------------------------------------------------------------------------

    def issue(self, names: list[str], challenge: str, cert_id: str | None = None,
              check_names: bool = True, new_key: bool = False) -> CertInfo:
        """Order a certificate for ``names`` (the first names the store folder, unless ``cert_id``).

        A renewal keeps the stored private key (certbot's ``--reuse-key``) so that DANE ``3 1 1`` records
        published for it stay true; ``new_key`` makes a fresh one.
        """
        if challenge not in CHALLENGES:
            raise OrderFailed(f"unknown challenge {challenge!r} (one of {', '.join(CHALLENGES)})")
        if check_names:
            for name in names:
                if name.startswith("*.") and challenge != "dns-01":
                    raise OrderFailed(f"{name}: a wildcard name needs the dns-01 challenge")
                try:
                    preflight.check(name, challenge, nameservers=list(self.settings.nameservers),
                                    timeout=self.settings.dns_timeout, public=list(self.settings.public_addresses),
                                    files=self.files, http_port=self.settings.http01_port)
                except preflight.NotOurs as exc:
                    raise OrderFailed(f"refused before ordering: {exc}") from None
        try:
            return self._order(names, challenge, cert_id or names[0], new_key)
        except OrderFailed:
            raise
        except (errors.Error, messages.Error, requests.RequestException, ChallengeError, OSError,
                jose.errors.Error) as exc:
            raise OrderFailed(_reason(exc)) from None

    def _order(self, names: list[str], challenge: str, cert_id: str, new_key: bool = False) -> CertInfo:
        acme, account_key = self._client()
        key_pem = b"" if new_key else self._stored_key(cert_id)
        if not key_pem:
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, names))
        cleanups: list[Any] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                name = authz.body.identifier.value
                challb = self._pick(authz, challenge)
                cleanups.append(self._prepare(challb, name, challenge, account_key))
                # ``answer_challenge`` insists on a ``Link: rel=up`` header that RFC 8555 does not require
                # (Pebble sends none); the POST itself is all the CA needs.
                acme.net.post(challb.uri, _EmptyResponse(), new_nonce_url=acme.directory["newNonce"])
            deadline = dt.datetime.now() + dt.timedelta(seconds=VALIDATION_TIMEOUT)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for undo in cleanups:
                try:
                    undo()
                except (OSError, ChallengeError):
                    pass
        return self.store.save(cert_id, order.fullchain_pem.encode(), key_pem, source="acme", challenge=challenge)

    def _stored_key(self, cert_id: str) -> bytes:
        """The private key of the stored certificate ``cert_id``, if there is one that still loads."""
        if self.store.get(cert_id) is None:
            return b""
        try:
            pem = self.store.key_path(cert_id).read_bytes()
            serialization.load_pem_private_key(pem, password=None)
        except (OSError, ValueError, TypeError):
            return b""
        return pem

    @staticmethod
    def _typ(challb: messages.ChallengeBody) -> str:
        chall = challb.chall
        if isinstance(chall, challenges.UnrecognizedChallenge):
            return str(chall.jobj.get("type", ""))
        return str(getattr(chall, "typ", ""))

    def _pick(self, authz: messages.AuthorizationResource, challenge: str) -> messages.ChallengeBody:
        for challb in authz.body.challenges:
            if self._typ(challb) == challenge:
                return challb
        offered = ", ".join(self._typ(c) for c in authz.body.challenges)
        raise OrderFailed(f"{authz.body.identifier.value}: the CA does not offer {challenge} (offers {offered})")

    def _prepare(self, challb: messages.ChallengeBody, name: str, challenge: str, account_key: jose.JWK) -> Any:
        """Put the answer where the CA will look; returns how to take it back."""
        chall = challb.chall
        if challenge == "http-01":
            assert isinstance(chall, challenges.HTTP01)
            path = self.files.http01_put(chall.encode("token"), chall.key_authorization(account_key))
            return lambda: self.files.remove(path)
        if challenge == "dns-01":
            assert isinstance(chall, challenges.DNS01)
            value = chall.validation(account_key)
            domain = name[2:] if name.startswith("*.") else name
            run_dns_hook(self.settings.dns01_hook, "add", domain, value)
            return lambda: run_dns_hook(self.settings.dns01_hook, "remove", domain, value)
        token = str(chall.jobj["token"]) if isinstance(chall, challenges.UnrecognizedChallenge) else ""
        thumbprint = jose.b64encode(account_key.thumbprint(hash_function=hashes.SHA256)).decode()
        path = self.files.alpn_put(name, f"{token}.{thumbprint}")
        return lambda: self.files.remove(path)
