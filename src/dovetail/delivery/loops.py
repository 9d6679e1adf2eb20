"""Mail loop detection from the header section: too many Received: hops, or our own Delivered-To."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderFacts:
    received: int
    delivered_to: frozenset[str]


def scan_headers(head: bytes) -> HeaderFacts:
    """Count ``Received:`` fields and collect ``Delivered-To:`` addresses (lowercased)."""
    received = 0
    delivered: set[str] = set()
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"received":
            received += 1
        elif name == b"delivered-to":
            addr = value.decode("utf-8", "replace").strip().strip("<>").strip().lower()
            if addr:
                delivered.add(addr)
    return HeaderFacts(received, frozenset(delivered))
