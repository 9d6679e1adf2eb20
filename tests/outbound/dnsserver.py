"""The loopback DNS server moved to ``tests/dnsserver.py`` (sender authentication uses it too)."""

from tests.dnsserver import LoopbackDNS, free_port

__all__ = ["LoopbackDNS", "free_port"]
