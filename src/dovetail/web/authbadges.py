"""Sender-authentication verdicts as badges for the message and reply views, from OUR header only.

Anyone can write an ``Authentication-Results`` header; only the one our MX wrote under our authserv-id
(``server.hostname``) is believed, the way the replies engine and its webhooks believe it
(:func:`dovetail.mailauth.results.parse_ours`). A message without such a header shows no verdicts
rather than someone else's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mailauth.results import parse_ours

TONES = {"pass": "pass", "fail": "fail", "permerror": "fail", "softfail": "warn", "temperror": "warn",
         "policy": "warn", "neutral": "warn", "none": "none"}


@dataclass(frozen=True)
class Badge:
    method: str  # SPF, DKIM, DMARC, ARC
    result: str
    detail: str = ""

    @property
    def tone(self) -> str:
        """``pass`` (green), ``fail`` (red), ``warn`` (amber) or ``none`` (grey): the CSS class suffix."""
        return TONES.get(self.result, "none")


def badges(header_values: list[str], authserv_id: str) -> list[Badge]:
    """The badges of our Authentication-Results among ``header_values``; empty when none is ours."""
    auth = parse_ours(header_values, authserv_id)
    out: list[Badge] = []
    if auth["spf"] is not None:
        out.append(Badge("SPF", auth["spf"]))
    for d in auth["dkim"]:
        out.append(Badge("DKIM", d["result"], f"d={d['domain']}"))
    dm = auth["dmarc"]
    if dm is not None:
        detail = f"from={dm['from_domain']} p={dm['policy']}" if dm.get("from_domain") else ""
        if dm.get("override"):
            detail += f"; policy overridden ({dm['override']})"
        out.append(Badge("DMARC", dm["result"], detail))
    if auth["arc"] is not None:
        out.append(Badge("ARC", auth["arc"]))
    return out
