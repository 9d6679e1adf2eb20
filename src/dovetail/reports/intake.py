"""Mail to the ``rua`` addresses we publish, read as reports: the hand-over after local delivery.

The MX accepts ``dmarc-reports@<domain>`` and ``tls-reports@<domain>`` of every domain of ours (the
addresses ``dovetail dns`` publishes) and the delivery agent files them, as any mail, durably in the
tenant's report intake ``mail/<tenant>/_reports/``. Right after, :func:`local_delivery` hands each one
here: its report files are unpacked, parsed and stored per domain and day. The Maildir copy stays
where it is, so a report that could not be read is kept aside there and listed in ``report_rejects``
with the reason; nothing here raises into delivery.

A tenant's report address takes reports about that tenant's domains only: a report about another
tenant's domain is refused, so no tenant can write figures onto another's pages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from ..directory import Directory, normalize_domain
from ..directory.resolve import reports_intake_maildir
from ..log import get_logger
from ..storage import open_storage
from .dmarc import ReportError, parse_dmarc
from .store import ReportStore
from .tlsrpt import parse_tlsrpt
from .unpack import UnpackError, report_files

log = get_logger("reports")

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # read of the stored message; the MX's size limit is the real bound


@dataclass
class Outcome:
    """What one message gave: reports stored, duplicates skipped, and why the rest was refused."""

    dmarc: int = 0
    tls: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return self.dmarc + self.tls


class ReportIntake:
    def __init__(self, engine: Engine, directory: Directory | None = None) -> None:
        self.store = ReportStore(engine)
        self.directory = directory or Directory(engine)

    def _ours(self, tenant: str, domain: str) -> str | None:
        """``domain`` as the directory stores it (A-label) when ``tenant`` owns it, else None."""
        try:
            name = normalize_domain(domain)
            owner = self.directory.domain_tenant(name)
        except ValueError:
            return None
        return name if owner is not None and owner.lower() == tenant.lower() else None

    def _read(self, tenant: str, raw: bytes, out: Outcome) -> None:
        for f in report_files(raw):
            kind = f.kind
            if kind == "dmarc":
                report = parse_dmarc(f.data)
                name = self._ours(tenant, report.domain)
                if name is None:
                    raise ReportError(f"DMARC report about {report.domain}, not a domain of tenant {tenant}")
                report.domain = name
                if self.store.save_dmarc(report):
                    out.dmarc += 1
                    log.info("DMARC report stored", tenant=tenant, domain=report.domain, org=report.org_name,
                             report_id=report.report_id, records=len(report.rows))
                else:
                    out.duplicates += 1
                    log.info("DMARC report already stored", domain=report.domain, org=report.org_name,
                             report_id=report.report_id)
            elif kind == "tls":
                tls = parse_tlsrpt(f.data)
                mine = []
                for p in tls.policies:
                    name = self._ours(tenant, p.domain)
                    if name is not None:
                        p.domain = name
                        mine.append(p)
                if not mine:
                    raise ReportError(f"TLS report about {', '.join(sorted({p.domain for p in tls.policies}))}, "
                                      f"not a domain of tenant {tenant}")
                saved = self.store.save_tls(tls, mine)
                out.tls += saved
                if not saved:
                    out.duplicates += 1
                log.info("TLS report stored" if saved else "TLS report already stored", tenant=tenant,
                         org=tls.org_name, report_id=tls.report_id, policies=saved)
            else:
                out.problems.append(f"{f.name or 'attachment'}: neither XML nor JSON")

    def process(self, tenant: str, recipient: str, raw: bytes, message_key: str = "") -> Outcome:
        """Read and store the reports of one message. Never raises: problems are logged and recorded."""
        out = Outcome()
        try:
            self._read(tenant, raw, out)
        except (UnpackError, ReportError) as exc:
            out.problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a stranger's bytes must never break delivery
            out.problems.append(f"unexpected {exc.__class__.__name__}: {exc}")
        if out.problems and not out.stored and not out.duplicates:
            reason = "; ".join(out.problems)
            log.warning("report refused, message kept aside", tenant=tenant, rcpt=recipient, file=message_key,
                        reason=reason)
            try:
                self.store.reject(tenant, recipient, message_key, reason)
            except Exception as exc:  # noqa: BLE001
                log.error("could not record a refused report", file=message_key, error=repr(exc))
        return out


class ReportsHandOver:
    """The hand-over of messages just delivered to the tenants' report intakes (other mailboxes are not
    its own): each is read back through the storage API and stored as a report before the delivery
    returns. Items carry ``tenant``, ``mailbox``, ``maildir`` and ``key``, as the replies hand-over's do."""

    def __init__(self, engine: Engine, mail_root: Path) -> None:
        self.intake = ReportIntake(engine)
        self.mail_root = mail_root

    def wants(self, item: Any) -> bool:
        return Path(item.maildir) == reports_intake_maildir(self.mail_root, item.tenant)

    async def __call__(self, items: list[Any]) -> None:
        await asyncio.to_thread(self._store, items)

    def _store(self, items: list[Any]) -> None:
        for item in items:
            if not self.wants(item):
                continue
            try:
                raw = open_storage(item.maildir, create=False).read_delivered(item.key, limit=MAX_MESSAGE_BYTES)
            except (OSError, ValueError) as exc:
                log.warning("report message unreadable", file=item.key, error=repr(exc))
                continue
            if raw is not None:
                self.intake.process(item.tenant, item.mailbox, raw, item.key)


def local_delivery(engine: Engine, mail_root: Path) -> ReportsHandOver:
    """The hand-over for the tenants' report intakes."""
    return ReportsHandOver(engine, mail_root)
