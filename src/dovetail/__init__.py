"""Dovetail: a multi-tenant mail platform (MX, IMAP, outbound, replies engine) in one package."""

__version__ = "0.1.0"
