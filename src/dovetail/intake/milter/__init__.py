"""Milters: the Sendmail/Postfix content filter protocol, spoken by the MX at the end of DATA."""

from .client import MilterSpec, MilterVerdict, check_message, parse_milter

__all__ = ["MilterSpec", "MilterVerdict", "check_message", "parse_milter"]
