"""Bounces: RFC 3464 delivery status notifications and the free-text ones some MTAs still send.

A DSN names each recipient with ``Final-Recipient``/``Action``/``Status``/``Diagnostic-Code``; a
``5.x.x`` status or ``Action: failed`` is a hard bounce, ``4.x.x``/``delayed`` a soft one. Bounces
without a machine-readable part (qmail, older Exim and Exchange, some hosted services) are recognised
by their sender and subject, and the failed address and SMTP code are picked out of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .parse import Parsed, embedded_headers, report_fields
from .text import normalize_msgid

_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|bounce[s]?|mdaemon)@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered mail|delivery status notification|delivery (has )?fail|mail delivery failed|"
    r"failure notice|returned mail|delivery failure|could not be delivered|non[- ]?delivery|"
    r"unzustellbar|nicht zustellbar|non remis|non distribuable|échec de (la )?(remise|livraison)|"
    r"no se puede entregar|no entregado|onbestelbaar|niet bezorgd|mail system error|delivery notification|"
    r"warning: message .{0,40} delayed|delayed mail|delivery delayed)",
    re.I,
)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])([0-5])(\d)\b[ -]")
_ADDRESS = re.compile(r"<?([A-Za-z0-9._%+'=/-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63})>?")
_SOFT_WORDS = re.compile(r"(mailbox (is )?full|over ?quota|quota exceeded|temporar|try again|delayed|"
                         r"will retry|still trying|insufficient (system )?storage|greylist)", re.I)
_HARD_WORDS = re.compile(r"(user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
                         r"doesn't exist|address rejected|recipient rejected|invalid (recipient|mailbox|address)|"
                         r"mailbox unavailable|not found|account (has been )?disabled|permanent|"
                         r"unrouteable|no mailbox here|host or domain name not found|user doesn't have)", re.I)


@dataclass
class BounceRecipient:
    address: str
    action: str
    status: str
    diagnostic: str
    hard: bool
    remote_mta: str = ""  # the MTA that refused it (``Remote-MTA``), when the report says

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "action": self.action, "status": self.status,
                "diagnostic": self.diagnostic, "type": "hard" if self.hard else "soft",
                "remote_mta": self.remote_mta}


@dataclass
class Bounce:
    recipients: list[BounceRecipient] = field(default_factory=list)
    original_message_id: str = ""
    original_to: list[str] = field(default_factory=list)
    reporting_mta: str = ""
    standard: bool = True

    @property
    def hard(self) -> bool:
        return any(r.hard for r in self.recipients) or not self.recipients

    def as_dict(self) -> dict[str, Any]:
        return {"type": "hard" if self.hard else "soft", "standard": self.standard,
                "recipients": [r.as_dict() for r in self.recipients],
                "original_message_id": self.original_message_id, "reporting_mta": self.reporting_mta}


def _strip_type(value: str) -> str:
    """``rfc822; a@b`` -> ``a@b``."""
    _, sep, rest = value.partition(";")
    out = (rest if sep else value).strip().strip("<>").strip().lower()
    return out if "@" in out else ""


def _original(parsed: Parsed) -> tuple[str, list[str]]:
    for part in parsed.reports:
        inner = embedded_headers(part)
        if inner is not None:
            mid = normalize_msgid(str(inner.get("Message-ID") or ""))
            to = [m.group(1).lower() for m in _ADDRESS.finditer(str(inner.get("To") or ""))]
            if mid or to:
                return mid, to
    m = re.search(r"^\s*Message-ID:\s*(<[^>\s]+>)", parsed.text, re.I | re.M)
    return (normalize_msgid(m.group(1)) if m else ""), []


def parse_dsn(parsed: Parsed) -> Bounce | None:
    """The bounce in a multipart/report; report-type=delivery-status, or ``None``."""
    status_parts = [p for p in parsed.reports
                    if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")]
    if not status_parts:
        return None
    bounce = Bounce()
    for part in status_parts:
        blocks = report_fields(part)
        if blocks and "reporting-mta" in blocks[0]:
            bounce.reporting_mta = _strip_type(blocks[0]["reporting-mta"]) or blocks[0]["reporting-mta"].split(";")[-1]
            bounce.reporting_mta = bounce.reporting_mta.strip()
        for block in blocks:
            rcpt = _strip_type(block.get("final-recipient", "") or block.get("original-recipient", ""))
            if not rcpt:
                continue
            action = block.get("action", "").strip().lower()
            status = block.get("status", "").strip()
            m = _STATUS.search(status)
            status = m.group(0) if m else status[:16]
            diag = block.get("diagnostic-code", "")
            diag = diag.split(";", 1)[1].strip() if ";" in diag else diag.strip()
            if action in ("delayed", "relayed", "delivered", "expanded"):
                hard = False
                if action != "delayed":
                    continue
            else:
                hard = not status.startswith("4") and not (not status and _SOFT_WORDS.search(diag))
            remote = block.get("remote-mta", "")
            remote = (remote.split(";", 1)[1] if ";" in remote else remote).strip()[:300]
            bounce.recipients.append(BounceRecipient(rcpt, action or "failed", status, diag[:1000], hard, remote))
    bounce.original_message_id, bounce.original_to = _original(parsed)
    return bounce


def looks_like_bounce(parsed: Parsed) -> bool:
    """A non-DSN bounce: sent by a mailer daemon or with the null sender, with a bounce subject."""
    daemon = bool(_BOUNCE_SENDER.match(parsed.from_addr)) or parsed.return_path == ""
    subject = bool(_BOUNCE_SUBJECT.search(parsed.subject))
    if daemon and subject:
        return True
    body = parsed.text[:5000]
    return daemon and bool(re.search(r"(could not be delivered|permanent (error|fatal)|delivery to the following"
                                     r"|message was undeliverable|undeliverable to)", body, re.I))


def parse_free_text(parsed: Parsed) -> Bounce:
    """Failed recipients, status and diagnostic picked out of a human-readable bounce."""
    body = parsed.text or ""
    if not body and parsed.html:
        from .text import html_to_text

        body = html_to_text(parsed.html)
    body = body[:50_000]
    own = {parsed.from_addr, *parsed.to, *parsed.delivered_to}
    # The original message, when quoted, starts at its headers; only the text above names failures.
    head = re.split(r"^(?:-+ ?(?:Original message|This is a copy|Below this line).*|Received: .*|"
                    r"Return-Path: .*)$", body, maxsplit=1, flags=re.I | re.M)[0]
    addresses = [a.lower() for a in dict.fromkeys(m.group(1) for m in _ADDRESS.finditer(head))]
    addresses = [a for a in addresses if a not in own and not _BOUNCE_SENDER.match(a)][:20]
    status_m = _STATUS.search(head)
    code_m = _SMTP_CODE.search(head)
    status = status_m.group(0) if status_m else ""
    if status.startswith("2"):
        status = ""
    if status:
        hard = status.startswith("5")
    elif code_m:
        hard = code_m.group(1) == "5"
        status = f"{code_m.group(1)}.0.0"
    else:
        hard = not _SOFT_WORDS.search(head) or bool(_HARD_WORDS.search(head))
    if _SOFT_WORDS.search(head) and not status_m and not (code_m and code_m.group(1) == "5"):
        hard = False
    diag_m = re.search(r"^.*\b(?:[45]\d\d|[45]\.\d+\.\d+)\b.*$", head, re.M)
    diag = diag_m.group(0).strip() if diag_m else ""
    bounce = Bounce(standard=False)
    for addr in addresses or [""]:
        if addr:
            bounce.recipients.append(BounceRecipient(addr, "failed" if hard else "delayed", status, diag[:1000],
                                                     hard))
    bounce.original_message_id, bounce.original_to = _original(parsed)
    if not bounce.recipients and bounce.original_to:
        bounce.recipients = [BounceRecipient(a, "failed" if hard else "delayed", status, diag[:1000], hard)
                             for a in bounce.original_to]
    return bounce
