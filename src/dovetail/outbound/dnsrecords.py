"""The DNS records a domain publishes to send and receive through us, and a check of what is live.

``dns_records`` is what ``dovetail dns DOMAIN`` prints and the web UI shows; ``check`` resolves each
record with dnspython and says what is missing or wrong. For a relay such as SES the custom MAIL
FROM records (an MX and an SPF TXT on ``bounce.<domain>``) are included, as SES asks for them.

The ``id=`` of the ``_mta-sts`` record is a hash of the policy it announces, so printing the records
again gives the same zone, and the id moves only when the policy does (another mode, MX or max_age),
which is when RFC 8461 asks senders to fetch the policy again.

Given the certificate our MX serves for its host name, the records include its DANE ``3 1 1`` TLSA
record (RFC 7672), so that senders that validate DNSSEC can require TLS with that key; it belongs in
the MX host's zone, which must be signed for it to count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from dovetail.directory import Directory, DirectoryError
from dovetail.directory.addresses import normalize_domain
from dovetail.directory.resolve import DMARC_REPORTS_LOCAL, TLS_REPORTS_LOCAL
from dovetail.directory.store import MTA_STS_MODES
from dovetail.outbound.dane import tlsa_record_for
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.transports import Transports

MAIL_FROM_LABEL = "bounce"
MTA_STS_MAX_AGE = 604800  # one week, in seconds


@dataclass(frozen=True)
class Record:
    """One record to publish. ``required`` False means recommended (MTA-STS, TLS-RPT)."""

    name: str
    type: str
    value: str
    purpose: str
    required: bool = True

    def zone_line(self) -> str:
        value = f'"{self.value}"' if self.type == "TXT" else self.value
        return f"{self.name}.\t3600\tIN\t{self.type}\t{value}"


@dataclass(frozen=True)
class CheckResult:
    record: Record
    status: str  # ok | missing | wrong | error
    found: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class DnsPlanner:
    """Plans and checks the records of our domains.

    ``mx_host`` is the name our MX answers as (``server.hostname``); ``resolver`` a dnspython resolver
    (the system's when None); ``mta_sts_mode`` the mode of the MTA-STS policy (RFC 8461) for a domain
    the ``directory`` (when given) does not know; a known domain's policy has the domain's own mode.
    """

    def __init__(self, keys: DkimKeys, transports: Transports, mx_host: str,
                 resolver: dns.resolver.Resolver | None = None, *, dmarc_policy: str = "none",
                 mta_sts_mode: str = "testing", directory: Directory | None = None,
                 mx_cert_pem: bytes | None = None) -> None:
        if mta_sts_mode not in MTA_STS_MODES:
            raise ValueError(f"MTA-STS mode {mta_sts_mode!r}: expected one of {', '.join(MTA_STS_MODES)}")
        self.keys = keys
        self.transports = transports
        self.mx_host = mx_host.rstrip(".")
        self.resolver = resolver
        self.dmarc_policy = dmarc_policy
        self.mta_sts_mode = mta_sts_mode
        self.directory = directory
        self.mx_tlsa = ""
        if mx_cert_pem:
            try:
                self.mx_tlsa = tlsa_record_for(mx_cert_pem)
            except ValueError:  # not a certificate we can read: no TLSA record to offer
                pass

    def mode_for(self, domain: str) -> str:
        """The MTA-STS mode of ``domain``: its own (``dovetail domain set D --mta-sts``), else the planner's."""
        if self.directory is not None:
            try:
                return self.directory.domain_get(domain).mta_sts_mode
            except DirectoryError:
                pass
        return self.mta_sts_mode

    def mta_sts_policy(self, domain: str) -> str:
        """The policy file served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461): the
        mode, one ``mx:`` line per MX host we publish for the domain, and ``max_age``."""
        return (f"version: STSv1\r\nmode: {self.mode_for(domain)}\r\nmx: {self.mx_host}\r\n"
                f"max_age: {MTA_STS_MAX_AGE}\r\n")

    def mta_sts_id(self, domain: str) -> str:
        """The ``id=`` announcing :meth:`mta_sts_policy`: 20 hex digits of its SHA-256 (RFC 8461 allows
        up to 32 letters and digits), the same for the same policy."""
        return hashlib.sha256(self.mta_sts_policy(domain).encode()).hexdigest()[:20]

    def dns_records(self, domain: str) -> list[Record]:
        dom = normalize_domain(domain)
        transport = self.transports.for_domain(dom)
        region = transport.ses_region
        spf = "v=spf1 include:amazonses.com ~all" if region else f"v=spf1 mx a:{self.mx_host} ~all"
        out = [Record(dom, "MX", f"10 {self.mx_host}.", "receive mail for the domain at our MX"),
               Record(dom, "TXT", spf, "SPF: hosts allowed to send as the domain")]
        for key in self.keys.list(dom):
            out.append(Record(key.record_name, "TXT", key.txt,
                              f"DKIM {key.algorithm} selector {key.selector} ({key.state})"))
        out.append(Record(f"_dmarc.{dom}", "TXT",
                          f"v=DMARC1; p={self.dmarc_policy}; rua=mailto:{DMARC_REPORTS_LOCAL}@{dom}; adkim=r; aspf=r",
                          "DMARC: what receivers do with mail failing SPF and DKIM alignment"))
        if region:
            mail_from = f"{MAIL_FROM_LABEL}.{dom}"
            out.append(Record(mail_from, "MX", f"10 feedback-smtp.{region}.amazonses.com.",
                              "SES custom MAIL FROM: bounces come back to SES"))
            out.append(Record(mail_from, "TXT", "v=spf1 include:amazonses.com ~all",
                              "SES custom MAIL FROM: SPF for the envelope sender domain"))
        out.append(Record(f"_mta-sts.{dom}", "TXT", f"v=STSv1; id={self.mta_sts_id(dom)}",
                          "MTA-STS: senders must use TLS to our MX (RFC 8461)", required=False))
        out.append(Record(f"mta-sts.{dom}", "CNAME", f"{self.mx_host}.",
                          "MTA-STS: host serving /.well-known/mta-sts.txt", required=False))
        out.append(Record(f"_smtp._tls.{dom}", "TXT", f"v=TLSRPTv1; rua=mailto:{TLS_REPORTS_LOCAL}@{dom}",
                          "TLS-RPT: where senders report TLS failures (RFC 8460)", required=False))
        if self.mx_tlsa:
            out.append(Record(f"_25._tcp.{self.mx_host}", "TLSA", self.mx_tlsa,
                              "DANE: the key of our MX certificate, for senders that validate DNSSEC (RFC 7672; "
                              "only in a signed zone, and renew with the next key published first)", required=False))
        return out

    # --- checking ------------------------------------------------------------------------------

    def _resolve(self, name: str, rtype: str) -> list[str]:
        res = self.resolver or dns.resolver.get_default_resolver()
        try:
            answer = res.resolve(name, rtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        if rtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if rtype == "MX":
            return [f"{r.preference} {r.exchange.to_text()}" for r in answer]
        return [r.to_text() for r in answer]

    def check(self, domain: str) -> list[CheckResult]:
        return [self.check_record(r) for r in self.dns_records(domain)]

    def check_record(self, record: Record) -> CheckResult:
        try:
            if record.type == "CNAME":
                found = self._resolve(record.name, "CNAME") or self._resolve(record.name, "A") \
                    or self._resolve(record.name, "AAAA")
                if not found:
                    return CheckResult(record, "missing", [], f"{record.name} does not resolve")
                return CheckResult(record, "ok", found)
            found = self._resolve(record.name, record.type)
        except dns.exception.DNSException as exc:
            return CheckResult(record, "error", [], f"lookup failed: {exc.__class__.__name__}: {exc}")
        return _judge(record, found)


def _tags(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(";"):
        name, eq, val = part.partition("=")
        if eq:
            out[name.strip().lower()] = "".join(val.split())
    return out


def _judge(record: Record, found: list[str]) -> CheckResult:
    if record.type == "TLSA":
        if not found:
            return CheckResult(record, "missing", found, f"no TLSA record at {record.name}")
        if "".join(record.value.split()).lower() not in ["".join(f.split()).lower() for f in found]:
            return CheckResult(record, "wrong", found, "no published TLSA record matches our MX certificate's key")
        return CheckResult(record, "ok", found)
    if record.type == "MX":
        want = record.value.split()[1].rstrip(".").lower()
        hosts = [f.split()[-1].rstrip(".").lower() for f in found]
        if not found:
            return CheckResult(record, "missing", found, f"no MX record for {record.name}")
        if want not in hosts:
            return CheckResult(record, "wrong", found, f"MX does not point at {want}")
        return CheckResult(record, "ok", found)
    prefix = record.value.split(";")[0].split()[0].lower()  # v=spf1, v=DKIM1, v=DMARC1, v=STSv1, ...
    candidates = [f for f in found if f.lower().startswith(prefix)]
    if not candidates:
        return CheckResult(record, "missing", found, f"no {prefix} TXT record at {record.name}")
    if len(candidates) > 1:
        return CheckResult(record, "wrong", found, f"{len(candidates)} {prefix} records at {record.name}; "
                                                   "there must be exactly one")
    got = candidates[0]
    if prefix == "v=spf1":
        missing = [m for m in record.value.split()[1:-1] if m.lower() not in got.lower().split()]
        if missing:
            return CheckResult(record, "wrong", found, "SPF lacks " + " ".join(missing))
    elif prefix == "v=dkim1":
        if _tags(got).get("p") != _tags(record.value).get("p"):
            return CheckResult(record, "wrong", found, "published DKIM key differs from ours")
    elif prefix == "v=stsv1":
        if "id" not in _tags(got):
            return CheckResult(record, "wrong", found, "MTA-STS record has no id=")
    return CheckResult(record, "ok", found)
