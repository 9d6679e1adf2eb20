"""What outbound tells the rest of the system: per-recipient delivery events and the relay's ids.

The replies engine consumes these (campaign registry, suppression list, ``message.delivered`` /
``deferred`` / ``bounced`` / ``suppressed`` webhooks); outbound only depends on the small protocols
below, so either side can change alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DeliveryEvent:
    """One recipient's outcome of one delivery attempt (or, ``suppressed``, of none: the address is on
    the tenant's suppression list and was left out of the envelope)."""

    kind: str  # delivered | deferred | bounced | suppressed (left out before queueing: on the suppression list)
    queue_id: str
    recipient: str
    sender: str
    message_id: str | None
    dsn: str
    reason: str
    relay: str | None = None
    relay_queue_id: str | None = None  # the id in the relay's "250 ... queued as X"
    provider_message_id: str | None = None  # e.g. SES's <id@region.amazonses.com>
    tenant: str | None = None
    campaign: str | None = None
    attempt: int = 0  # this attempt's number, 1 for the first (0: not a delivery attempt)
    next_attempt: float | None = None  # deferred: when the queue tries again (unix time); None when it gives up
    contact: str | None = None  # the caller's own contact id, when the send API was given one


class EventSink(Protocol):
    def outbound_events(self, events: list[DeliveryEvent]) -> None: ...


class Suppressions(Protocol):
    """The tenant's suppression list (bounced, complained, unsubscribed addresses).

    ``suppressed`` (the send API) and ``suppression_reasons`` (submission) are one lookup: each is one
    indexed query for all the addresses asked about.
    """

    def suppressed(self, tenant: str, addresses: Iterable[str]) -> set[str]: ...

    def suppression_reasons(self, tenant: str, addresses: Iterable[str]) -> dict[str, str]:
        """{address as given: why it is suppressed (hard_bounce, complaint, unsubscribe, manual)}."""
        ...


class CampaignRegistry(Protocol):
    """Where sent messages are recorded so replies can be threaded back to them."""

    def register_outbound(self, *, tenant: str, message_id: str, sender: str, recipients: list[str],
                          campaign: str | None, contact: str | None, tags: list[str],
                          reply_token: str | None) -> None: ...


class MemoryEvents:
    """An ``EventSink`` that keeps events in a list (CLI tools, benchmarks, tests)."""

    def __init__(self) -> None:
        self.events: list[DeliveryEvent] = []

    def outbound_events(self, events: list[DeliveryEvent]) -> None:
        self.events.extend(events)


class MemorySuppressions:
    """A ``Suppressions`` held in memory, for deployments without the replies engine and for tests."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, dict[str, str]] = {}

    def add(self, tenant: str, address: str, reason: str = "manual") -> None:
        self._by_tenant.setdefault(tenant, {})[address.lower()] = reason

    def suppressed(self, tenant: str, addresses: Iterable[str]) -> set[str]:
        return set(self.suppression_reasons(tenant, addresses))

    def suppression_reasons(self, tenant: str, addresses: Iterable[str]) -> dict[str, str]:
        have = self._by_tenant.get(tenant, {})
        return {a: have[a.lower()] for a in addresses if a.lower() in have}


_QUEUED_AS = re.compile(r"queued as ([A-Za-z0-9._@<>-]+)", re.I)
_SES_OK = re.compile(r"^Ok ([0-9a-f]{16}-[0-9a-f-]{20,})$", re.I)


def relay_ids(reply_text: str, ses_region: str | None) -> tuple[str | None, str | None]:
    """(relay queue id, provider Message-ID) from the text of a relay's ``250`` to DATA.

    Postfix and most MTAs say ``Ok: queued as 4Xyz``; SES says ``Ok 0100018c...-000000`` and rewrites
    the Message-ID to ``<that id@<region>.amazonses.com>``.
    """
    text = reply_text.strip()
    if text[:1].isdigit() and "." in text.split(" ", 1)[0]:
        text = text.split(" ", 1)[1] if " " in text else ""
    m = _SES_OK.match(text)
    if m:
        sid = m.group(1)
        region = ses_region or "us-east-1"
        return sid, f"<{sid}@{region}.amazonses.com>"
    m = _QUEUED_AS.search(text)
    return (m.group(1).strip("<>") if m else None), None
