"""Outbound sending: DKIM keys and signing, DNS records, transports, the relay/MX delivery agent,
the HTTP send API, and the submission policy backend."""

from __future__ import annotations

from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.dnsrecords import CheckResult, DnsPlanner, Record
from dovetail.outbound.events import DeliveryEvent, EventSink
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.send import SendService
from dovetail.outbound.transports import Transport, Transports

__all__ = [
    "AgentConfig", "CheckResult", "DeliveryEvent", "DkimKeys", "DnsPlanner", "EventSink", "OutboundAgent", "Record",
    "SendService", "Transport", "Transports",
]
