"""What kind of message a reply is: human, auto-reply, bounce, unsubscribe, complaint, challenge.

Checked in order of how certain the evidence is: machine-readable reports first (ARF complaints,
RFC 3464 bounces), then the mailer-daemon bounces without one, challenge-response systems, the
RFC 3834 and vendor auto-reply headers and multi-language out-of-office subjects, and finally the
text of the reply itself for unsubscribe requests.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from . import bounce as bounce_mod
from .parse import Parsed, embedded_headers, report_fields
from .text import normalize_msgid

HUMAN, AUTO_REPLY, BOUNCE, UNSUBSCRIBE, COMPLAINT, CHALLENGE = (
    "human", "auto_reply", "bounce", "unsubscribe", "complaint", "challenge")
KINDS = (HUMAN, AUTO_REPLY, BOUNCE, UNSUBSCRIBE, COMPLAINT, CHALLENGE)

_OOO_SUBJECT = re.compile(
    r"(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response|antwort)|^auto:|autoreply|"
    r"away from (the|my) (office|desk)|on (vacation|holiday|leave)|vacation (reply|message|notice)|"
    r"abwesenheit|automatische antwort|nicht im b[üu]ro|au[sß]er haus|urlaub|"
    r"r[ée]ponse automatique|absence|absent\b|en cong[ée]s?|hors du bureau|"
    r"respuesta autom[aá]tica|fuera de la oficina|ausente|de vacaciones|"
    r"automatisch antwoord|afwezig|niet aanwezig|buiten kantoor|met vakantie|"
    r"risposta automatica|fuori ufficio|assente|resposta autom[aá]tica|fora do escrit[óo]rio|"
    r"autosvar|fr[åa]nvaro|poza biurem|automatyczna odpowied[źz])",
    re.I,
)
_OOO_BODY = re.compile(
    r"(i am (currently )?(out of (the )?office|away|on (vacation|holiday|leave|annual leave|parental leave))|"
    r"i('m| am) out of (the )?office|i will be (out of (the )?office|away|back)|limited access to (my )?e-?mail|"
    r"ich bin (derzeit |zurzeit |bis )?.{0,40}(nicht im b[üu]ro|abwesend|im urlaub|au[sß]er haus)|"
    r"je suis (actuellement )?(absent|en cong[ée]|en vacances)|"
    r"estar[ée] fuera|estoy (fuera|de vacaciones|ausente)|"
    r"ik ben (momenteel |tot )?.{0,40}(afwezig|niet aanwezig|op vakantie|met vakantie))",
    re.I,
)
_CHALLENGE = re.compile(
    r"(please (verify|confirm) (that )?(you are|you're) (a )?(human|real person)|sender verification|"
    r"verify your (e-?mail )?address to (be added|deliver|complete)|challenge[- ]response|"
    r"i am protected by|boxbe|spamarrest|mailchannels|my spam filter requires|"
    r"approved senders list|click (the link|below) to (verify|confirm|have your (e-?mail|message) delivered)|"
    r"your message (is|has been) (held|queued) (pending|until) (verification|confirmation)|"
    r"request to verify your identity)",
    re.I,
)
_UNSUB_LINE = re.compile(
    r"^\W*(?:(?:please|por favor|bitte|s'il vous pla[iî]t|alstublieft|graag|per favore)[,\s]+)?"
    r"(unsubscribe|stop|stopp|remove( me)?|opt[- ]?out|take me off( (your|the) list)?|"
    r"(please )?(unsubscribe|remove) me( from (your|this|the|all)( mailing| e-?mail)? (list|lists|emails))?|"
    r"don'?t (e-?mail|contact) me( again| anymore)?|"
    r"abmelden|austragen|bitte (abmelden|austragen|entfernen)|d[ée]sinscri(re|ption|vez[- ]moi)|"
    r"d[ée]sabonner|d[ée]sabonnez[- ]moi|darme de baja|dar(se)? de baja|baja|cancelar suscripci[óo]n|"
    r"afmelden|uitschrijven|schrijf me uit|verwijder me)\W*$",
    re.I,
)
_UNSUB_SUBJECT = re.compile(r"^\W*(unsubscribe|remove|opt[- ]?out|stop|abmelden|d[ée]sabonner|baja|afmelden)\b",
                            re.I)


@dataclass
class Classification:
    kind: str
    bounce_type: str | None = None  # hard / soft for bounces
    details: dict[str, Any] = field(default_factory=dict)
    original_message_id: str = ""  # of the message a bounce/complaint reports on
    suppress: list[tuple[str, str]] = field(default_factory=list)  # (address, reason)


def classify(parsed: Parsed, stripped: str) -> Classification:
    """What the message is; one whose MIME nested too deep is classified from what lies within the
    bound (a delivery report there still makes a bounce) and says so in its details."""
    verdict = _classify(parsed, stripped)
    if parsed.depth_limited:
        verdict.details["mime_depth_limited"] = True
    return verdict


def _classify(parsed: Parsed, stripped: str) -> Classification:
    if parsed.report_type == "feedback-report" or any(
            p.get_content_type() == "message/feedback-report" for p in parsed.reports):
        return _complaint(parsed)
    if parsed.report_type == "delivery-status" or any(
            p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
            for p in parsed.reports):
        dsn = bounce_mod.parse_dsn(parsed)
        if dsn is not None and dsn.recipients:
            return _bounce(dsn)
    if bounce_mod.looks_like_bounce(parsed):
        return _bounce(bounce_mod.parse_free_text(parsed))
    body = (parsed.text or stripped)[:20_000]
    if _CHALLENGE.search(parsed.subject) or _CHALLENGE.search(body):
        return Classification(CHALLENGE)
    auto = _auto_evidence(parsed)
    if auto:
        details: dict[str, Any] = {"evidence": auto}
        ret = return_date(stripped or body, parsed.date)
        if ret:
            details["return_date"] = ret.isoformat()
        return Classification(AUTO_REPLY, details=details)
    if is_unsubscribe(parsed, stripped):
        return Classification(UNSUBSCRIBE, suppress=[(parsed.from_addr, "unsubscribe")] if parsed.from_addr else [])
    return Classification(HUMAN)


def _bounce(b: bounce_mod.Bounce) -> Classification:
    suppress = [(r.address, "hard_bounce") for r in b.recipients if r.hard and r.address]
    return Classification(BOUNCE, bounce_type="hard" if b.hard else "soft", details=b.as_dict(),
                          original_message_id=b.original_message_id, suppress=suppress)


def _complaint(parsed: Parsed) -> Classification:
    fields: dict[str, str] = {}
    original_mid = ""
    original_to: list[str] = []
    for part in parsed.reports:
        if part.get_content_type() == "message/feedback-report":
            for block in report_fields(part):
                fields.update(block)
        inner = embedded_headers(part)
        if inner is not None and not original_mid:
            original_mid = normalize_msgid(str(inner.get("Message-ID") or ""))
            original_to = [a for a in re.findall(r"[\w.+'=-]+@[\w.-]+", str(inner.get("To") or ""))]
    rcpt = fields.get("original-rcpt-to", "") or (original_to[0] if original_to else "")
    rcpt = rcpt.split(";")[-1].strip().strip("<>").lower()
    details = {"feedback_type": fields.get("feedback-type", "abuse").strip().lower(),
               "user_agent": fields.get("user-agent", ""), "original_recipient": rcpt,
               "source_ip": fields.get("source-ip", ""), "arrival_date": fields.get("arrival-date", ""),
               "original_message_id": original_mid}
    return Classification(COMPLAINT, details=details, original_message_id=original_mid,
                          suppress=[(rcpt, "complaint")] if "@" in rcpt else [])


def _auto_evidence(parsed: Parsed) -> list[str]:
    """Why a message looks automatic (RFC 3834, vendor headers, subject and body patterns)."""
    out = []
    auto_submitted = parsed.header("Auto-Submitted").strip().lower()
    if auto_submitted and auto_submitted != "no":
        out.append(f"auto-submitted: {auto_submitted.split(';')[0]}")
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponse", "X-Auto-Reply", "X-Autogenerated"):
        if parsed.msg.get(name) is not None:
            out.append(name.lower())
    precedence = parsed.header("Precedence").strip().lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        out.append(f"precedence: {precedence}")
    if parsed.msg.get("X-MS-Exchange-Generated-Message-Source") or parsed.msg.get("X-MS-Exchange-Inbox-Rules-Loop"):
        out.append("exchange-generated")
    if parsed.return_path == "":
        out.append("null return path")
    if _OOO_SUBJECT.search(parsed.subject):
        out.append("subject")
    if not out and _OOO_BODY.search((parsed.text or "")[:3000]):
        out.append("body")
    # A bare list header is common on human mail sent through lists; alone it proves nothing.
    if out == ["precedence: list"]:
        return []
    return out


def is_unsubscribe(parsed: Parsed, stripped: str) -> bool:
    """A request to stop mailing: to an ``unsubscribe`` address, or a reply that says only that."""
    for addr in parsed.to + parsed.delivered_to:
        local = addr.split("@", 1)[0]
        if re.match(r"^(unsubscribe|unsub|optout|opt-out|leave|remove)([+\-_.].*)?$", local):
            return True
    lines = [ln for ln in (stripped or "").splitlines() if ln.strip()]
    if lines and len(lines) <= 3 and len(" ".join(lines)) <= 120 and _UNSUB_LINE.match(lines[0].strip()):
        return True
    if _UNSUB_SUBJECT.match(parsed.subject) and len(stripped.strip()) <= 200:
        return True
    return False


# --- return dates ------------------------------------------------------------------------------

_MONTHS = {
    # en
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10,
    "nov": 11, "dec": 12,
    # de
    "januar": 1, "jänner": 1, "februar": 2, "märz": 3, "maerz": 3, "mai": 5, "juni": 6, "juli": 7,
    "oktober": 10, "dezember": 12, "okt": 10, "dez": 12,
    # fr
    "janvier": 1, "février": 2, "fevrier": 2, "mars": 3, "avril": 4, "juin": 6, "juillet": 7, "août": 8,
    "aout": 8, "septembre": 9, "octobre": 10, "novembre": 11, "décembre": 12, "decembre": 12,
    # es
    "enero": 1, "febrero": 2, "marzo": 3, "abril": 4, "mayo": 5, "junio": 6, "julio": 7, "agosto": 8,
    "septiembre": 9, "setiembre": 9, "octubre": 10, "noviembre": 11, "diciembre": 12,
    # nl
    "januari": 1, "februari": 2, "maart": 3, "mei": 5, "augustus": 8,
}
_MONTH_RE = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_CUE = (r"(?:until|till|back (?:in the office )?on|return(?:ing)? (?:to the office )?on|return on|back|"
        r"bis(?: einschließlich| zum| am)?|ab dem|ab|zurück am|wieder (?:im büro )?(?:am|ab)|"
        r"jusqu'(?:au|à)|jusqu’(?:au|à)|de retour (?:le|au bureau le)|retour le|"
        r"hasta el|hasta|regreso el|volveré el|de vuelta el|"
        r"tot en met|tot|terug op|vanaf|weer aanwezig op|"
        r"fino al|fino a|rientro il|di ritorno il|at[ée] (?:o dia|dia)|volto (?:no dia|em))")
_DATE_PATTERNS = [
    # 2027-01-12
    (re.compile(_CUE + r"\D{0,30}?(\d{4})-(\d{1,2})-(\d{1,2})", re.I), ("y", "m", "d")),
    # 12.01.2027 / 12/01/2027 / 12-01-27 (day first outside the US; month first after an English cue)
    (re.compile(_CUE + r"\D{0,30}?\b(\d{1,2})[./-](\d{1,2})(?:[./-](\d{2,4}))?\b", re.I), ("a", "b", "y")),
    # 12 January 2027 / 12. Januar / 12 de enero de 2027 / le 12 janvier
    (re.compile(_CUE + r"[^\n]{0,30}?\b(\d{1,2})(?:st|nd|rd|th|er|\.)?\s+(?:de\s+)?(" + _MONTH_RE +
                r")\.?(?:,?\s+(?:de\s+)?(\d{4}))?", re.I), ("d", "M", "y")),
    # January 12, 2027 / Monday, January 12th
    (re.compile(_CUE + r"[^\n]{0,30}?\b(" + _MONTH_RE + r")\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?",
                re.I), ("M", "d", "y")),
]


def return_date(text: str, sent: dt.datetime | None) -> dt.date | None:
    """The date an out-of-office author says they are back (or away until), when stated."""
    text = text[:5000]
    base = (sent or dt.datetime.now(dt.UTC).replace(tzinfo=None)).date()
    best: tuple[int, dt.date] | None = None
    for pattern, order in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            found = _build_date(m.groups(), order, base)
            if found and (best is None or m.start() < best[0]):
                best = (m.start(), found)
    return best[1] if best else None


def _build_date(groups: tuple[str | None, ...], order: tuple[str, ...], base: dt.date) -> dt.date | None:
    vals = dict(zip(order, groups, strict=True))

    def group(name: str) -> str:
        value = vals[name]
        if value is None:
            raise ValueError(f"date pattern matched without its {name!r} group")
        return value

    try:
        if "M" in vals:
            month = _MONTHS[group("M").lower()]
            day = int(group("d"))
        elif "a" in vals:
            a, b = int(group("a")), int(group("b"))
            day, month = a, b  # day first, as everywhere but the US; an impossible month swaps them
            if month > 12 and day <= 12:
                day, month = month, day
        else:
            month, day = int(group("m")), int(group("d"))
        year_text = vals.get("y")
        if year_text:
            year = int(year_text)
            year += 2000 if year < 100 else 0
            return dt.date(year, month, day)
        candidate = dt.date(base.year, month, day)
        if candidate < base - dt.timedelta(days=7):
            candidate = dt.date(base.year + 1, month, day)
        return candidate
    except (ValueError, KeyError):
        return None
