"""RFC 5322 address lists -> IMAP ENVELOPE address structures.

Hand-written because IMAP wants the raw pieces (display name with encoded words undecoded, route,
local part, domain, and group start/end markers), which ``email.utils.getaddresses`` flattens away.
"""

from __future__ import annotations

from typing import Any

MAX_ADDRESSES = 1000

Address = list[Any]  # [name, adl, mailbox, host]


def _tokens(s: str) -> list[tuple[str, str]]:
    """Lex into ('q', quoted) ('a', atom/dot-atom text) ('s', special) ('d', [domain literal]);
    comments are dropped but remembered as ('c', text) for a name fallback."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            buf = []
            i += 1
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(s[i])
                i += 1
            i += 1
            out.append(("q", "".join(buf)))
        elif c == "(":
            depth, buf = 0, []
            while i < n:
                if s[i] == "\\" and i + 1 < n:
                    buf.append(s[i + 1])
                    i += 2
                    continue
                if s[i] == "(":
                    depth += 1
                    if depth > 1:
                        buf.append("(")
                elif s[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                    buf.append(")")
                else:
                    buf.append(s[i])
                i += 1
            out.append(("c", "".join(buf)))
        elif c == "[":
            j = s.find("]", i)
            j = n if j < 0 else j + 1
            out.append(("d", s[i:j]))
            i = j
        elif c in "<>@,;:.":
            out.append(("s", c))
            i += 1
        else:
            j = i
            while j < n and s[j] not in ' \t\r\n"()<>@,;:.[]':
                j += 1
            out.append(("a", s[i:j]))
            i = j
        if len(out) > 20000:
            break
    return out


def _addr_spec(toks: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """Tokens of local@domain -> (mailbox, host)."""
    toks = [t for t in toks if t[0] != "c"]
    if ("s", "@") in toks:
        at = len(toks) - 1 - toks[::-1].index(("s", "@"))
        local, domain = toks[:at], toks[at + 1 :]
    else:
        local, domain = toks, []
    mailbox = "".join(_q(t) if t[0] == "q" else t[1] for t in local) or "MISSING_MAILBOX"
    host = "".join(t[1] for t in domain) or "MISSING_DOMAIN"
    return mailbox, host


def _q(t: tuple[str, str]) -> str:
    v = t[1]
    if any(c in v for c in ' "\\()<>@,;:[]') or not v:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v


def _phrase(toks: list[tuple[str, str]]) -> str | None:
    text = _phrase_raw(toks)
    return None if text is None else (" ".join(text.split(" ")).strip() or None)


def _phrase_raw(toks: list[tuple[str, str]]) -> str | None:
    words = [t[1] for t in toks if t[0] in ("a", "q") or (t[0] == "s" and t[1] == ".")]
    if not words:
        return None
    out = []
    prev = None
    for t in toks:
        if t[0] == "c":
            continue
        if t[0] == "s" and t[1] == ".":
            out.append(".")
        else:
            if prev is not None and prev != ".":
                out.append(" ")
            out.append(t[1])
        prev = t[1] if t[0] == "s" else "w"
    return "".join(out)


def _mailbox(toks: list[tuple[str, str]]) -> Address | None:
    if not [t for t in toks if t[0] != "c"]:
        return None
    if ("s", "<") in toks:
        lt = toks.index(("s", "<"))
        gt = toks.index(("s", ">")) if ("s", ">") in toks[lt:] else len(toks)
        name = _phrase(toks[:lt])
        inner = toks[lt + 1 : gt]
        route = None
        if ("s", ":") in inner:
            colon = inner.index(("s", ":"))
            route = "".join(t[1] for t in inner[:colon] if t[0] != "c") or None
            inner = inner[colon + 1 :]
        mailbox, host = _addr_spec(inner)
        return [name, route, mailbox, host]
    comments = [t[1] for t in toks if t[0] == "c"]
    mailbox, host = _addr_spec(toks)
    name = comments[-1] if comments else None
    return [name, None, mailbox, host]


def parse_address_list(value: str | None) -> list[Address] | None:
    """An address header value -> list of [name, adl, mailbox, host] (group markers included), or None."""
    if value is None:
        return None
    toks = _tokens(value)
    result: list[Address] = []
    current: list[tuple[str, str]] = []
    in_group = False
    in_angle = False
    i = 0
    while i < len(toks) and len(result) < MAX_ADDRESSES:
        t = toks[i]
        if t == ("s", "<"):
            in_angle = True
        elif t == ("s", ">"):
            in_angle = False
        if not in_angle and t == ("s", ":") and not in_group:
            name = _phrase(current)
            result.append([None, None, name, None])
            in_group = True
            current = []
        elif not in_angle and t == ("s", ","):
            addr = _mailbox(current)
            if addr:
                result.append(addr)
            current = []
        elif not in_angle and t == ("s", ";") and in_group:
            addr = _mailbox(current)
            if addr:
                result.append(addr)
            result.append([None, None, None, None])
            in_group = False
            current = []
        else:
            current.append(t)
        i += 1
    addr = _mailbox(current)
    if addr:
        result.append(addr)
    if in_group:
        result.append([None, None, None, None])
    return result or None
