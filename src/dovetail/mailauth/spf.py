"""SPF (RFC 7208): ``check_host()`` for the MAIL FROM and HELO identities.

Written here rather than taken from ``pyspf`` because pyspf is synchronous and does its own DNS:
in the MX it would block the event loop (or cost a thread per check) and bypass the process's
cached resolver (``mailauth.dns``), so every message would pay the full chain of lookups. This
evaluator is async over that resolver and otherwise follows the RFC: all mechanisms (``all``,
``include``, ``a``, ``mx``, ``ptr``, ``ip4``, ``ip6``, ``exists``), the ``redirect=`` and ``exp=``
modifiers, macros (§7), the limit of 10 DNS-querying terms (§4.6.4, ``permerror`` beyond) and of
2 void lookups, and at most 10 MX or PTR names per term. A test checks it against pyspf on the same
zones.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from .dns import DnsTempError, Resolver
from .results import SpfResult

MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES = 10  # MX hosts / PTR names looked at per term

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PermError(Exception):
    pass


class TempError(Exception):
    pass


_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MACRO = re.compile(r"%(?:\{([slodiphcrtvSLODIPHCRTV])(\d*)(r?)([.\-+,/_=]*)\}|(%)|(_)|(-))", re.IGNORECASE)


@dataclass
class _Context:
    ip: Address
    sender: str
    helo: str
    resolver: Resolver
    dns_terms: int = 0
    void: int = 0
    notes: list[str] = field(default_factory=list)

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise PermError(f"more than {MAX_DNS_TERMS} DNS lookups")

    def count_void(self, void: bool) -> None:
        if void:
            self.void += 1
            if self.void > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")


def _client_ip(text: str) -> Address:
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _valid_domain(domain: str) -> bool:
    labels = domain.rstrip(".").split(".")
    return len(labels) >= 2 and all(0 < len(lbl) <= 63 for lbl in labels) and len(domain) <= 253


async def check_host(ip: str, domain: str, sender: str, helo: str, resolver: Resolver,
                     scope: str = "mfrom") -> SpfResult:
    """The SPF result for ``ip`` sending as ``sender`` (``postmaster@helo`` when empty) for ``domain``."""
    identity = sender if scope == "mfrom" else helo
    try:
        client = _client_ip(ip)
    except ValueError:
        return SpfResult("permerror", domain, scope, identity, f"bad client address {ip!r}")
    if "@" not in sender:
        sender = f"postmaster@{sender or helo}"
    domain = domain.rstrip(".").lower()
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return SpfResult("none", domain, scope, identity, "domain is not a valid name")
    if not _valid_domain(domain):
        return SpfResult("none", domain, scope, identity, "domain is not a fully qualified name")
    ctx = _Context(client, sender, helo or "unknown", resolver)
    try:
        result, explanation, why = await _check(ctx, domain, top=True)
    except PermError as exc:
        return SpfResult("permerror", domain, scope, identity, str(exc))
    except TempError as exc:
        return SpfResult("temperror", domain, scope, identity, str(exc))
    return SpfResult(result, domain, scope, identity, why, explanation)


async def _record(ctx: _Context, domain: str) -> str | None:
    try:
        lookup = await ctx.resolver.txt(domain)
    except DnsTempError as exc:
        raise TempError(str(exc)) from None
    records = [r for r in lookup.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if not records:
        return None
    if len(records) > 1:
        raise PermError(f"{domain} publishes {len(records)} SPF records")
    return records[0]


async def _check(ctx: _Context, domain: str, top: bool = False) -> tuple[str, str, str]:
    """(result, explanation, reason) of ``check_host`` for ``domain``."""
    record = await _record(ctx, domain)
    if record is None:
        return "none", "", f"no SPF record at {domain}"
    terms = record.split()[1:]
    redirect: str | None = None
    exp: str | None = None
    mechanisms: list[tuple[str, str, str]] = []
    for term in terms:
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)", term)
        if m:
            name = m.group(1).lower()
            if name == "redirect":
                if redirect is not None:
                    raise PermError("two redirect= modifiers")
                redirect = m.group(2)
            elif name == "exp":
                if exp is not None:
                    raise PermError("two exp= modifiers")
                exp = m.group(2)
            else:
                _check_macros(m.group(2))  # unknown modifiers are ignored, but must parse
            continue
        qualifier = "+"
        if term[0] in "+-~?":
            qualifier, term = term[0], term[1:]
        mm = re.fullmatch(r"([A-Za-z0-9]+)(?:([:/])(.*))?", term)
        if not mm or mm.group(1).lower() not in _MECHANISMS:
            raise PermError(f"unknown mechanism {term!r}")
        name = mm.group(1).lower()
        arg = (mm.group(2) or "") + (mm.group(3) or "")
        mechanisms.append((qualifier, name, arg))
    for qualifier, name, arg in mechanisms:
        if await _matches(ctx, domain, name, arg):
            result = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qualifier]
            why = f"{ctx.ip} matched {name}{arg} in {domain}"
            explanation = await _explain(ctx, domain, exp) if result == "fail" and exp else ""
            return result, explanation, why
    if redirect is not None:
        ctx.count_term()
        target = await _expand(ctx, redirect, domain)
        if not _valid_domain(target):
            raise PermError(f"redirect to an invalid name {target!r}")
        result, explanation, why = await _check(ctx, target)
        if result == "none":
            raise PermError(f"redirect to {target}, which has no SPF record")
        return result, explanation, why
    return "neutral", "", f"no mechanism matched {ctx.ip} in {domain}"


def _split_cidr(arg: str, domain: str) -> tuple[str, int | None, int | None]:
    """``:domain/24//64`` to (domain-spec or '', ip4 length, ip6 length)."""
    m = re.fullmatch(r"(?::([^/]*))?(?:/(\d+))?(?://(\d+))?", arg)
    if not m:
        raise PermError(f"bad argument {arg!r}")
    v4 = int(m.group(2)) if m.group(2) is not None else None
    v6 = int(m.group(3)) if m.group(3) is not None else None
    if (v4 is not None and (v4 > 32 or m.group(2).startswith("0") and v4 != 0)) or (v6 is not None and v6 > 128):
        raise PermError(f"bad prefix length in {arg!r}")
    if m.group(1) is not None and m.group(1) == "":
        raise PermError(f"empty domain in {arg!r}")
    return m.group(1) or "", v4, v6


def _in_net(ip: Address, address: str, v4: int | None, v6: int | None) -> bool:
    try:
        other = ipaddress.ip_address(address)
    except ValueError:
        return False
    if other.version != ip.version:
        return False
    length = (v4 if v4 is not None else 32) if ip.version == 4 else (v6 if v6 is not None else 128)
    return ip in ipaddress.ip_network(f"{other}/{length}", strict=False)


async def _lookup(ctx: _Context, name: str, rdtype: str) -> tuple[str, ...]:
    try:
        answer = await ctx.resolver.lookup(name, rdtype)
    except DnsTempError as exc:
        raise TempError(str(exc)) from None
    return answer.records


async def _target(ctx: _Context, spec: str, domain: str) -> str:
    target = await _expand(ctx, spec, domain) if spec else domain
    if not _valid_domain(target):
        raise PermError(f"invalid domain {target!r}")
    return target


async def _matches(ctx: _Context, domain: str, name: str, arg: str) -> bool:
    ip = ctx.ip
    if name == "all":
        if arg:
            raise PermError("all takes no argument")
        return True
    if name in ("ip4", "ip6"):
        if not arg.startswith(":"):
            raise PermError(f"{name} needs an address")
        try:
            net = ipaddress.ip_network(arg[1:], strict=False)
        except ValueError:
            raise PermError(f"bad {name} network {arg[1:]!r}") from None
        if (name == "ip4") != (net.version == 4):
            raise PermError(f"{name} with a network of the other family: {arg[1:]!r}")
        return net.version == ip.version and ip in net
    if name == "include":
        if not arg.startswith(":") or len(arg) < 2:
            raise PermError("include needs a domain")
        ctx.count_term()
        target = await _target(ctx, arg[1:], domain)
        result, _, _ = await _check(ctx, target)
        if result == "pass":
            return True
        if result == "temperror":
            raise TempError(f"include:{target}: temperror")
        if result in ("permerror", "none"):
            raise PermError(f"include:{target} gave {result}")
        return False
    if name == "exists":
        if not arg.startswith(":") or len(arg) < 2:
            raise PermError("exists needs a domain")
        ctx.count_term()
        target = await _target(ctx, arg[1:], domain)
        records = await _lookup(ctx, target, "A")
        ctx.count_void(not records)
        return bool(records)
    spec, v4, v6 = _split_cidr(arg, domain)
    ctx.count_term()
    target = await _target(ctx, spec, domain)
    rdtype = "A" if ip.version == 4 else "AAAA"
    if name == "a":
        records = await _lookup(ctx, target, rdtype)
        ctx.count_void(not records)
        return any(_in_net(ip, r, v4, v6) for r in records)
    if name == "mx":
        mxs = await _lookup(ctx, target, "MX")
        ctx.count_void(not mxs)
        if len(mxs) > MAX_NAMES:
            raise PermError(f"{target} has more than {MAX_NAMES} MX records")
        for mx in mxs:
            host = mx.split()[-1]
            if host in ("", "."):
                continue
            if any(_in_net(ip, r, v4, v6) for r in await _lookup(ctx, host, rdtype)):
                return True
        return False
    if name == "ptr":
        if v4 is not None or v6 is not None:
            raise PermError("ptr takes no prefix length")
        for validated in await _validated_names(ctx, ip):
            if validated == target or validated.endswith("." + target):
                return True
        return False
    raise PermError(f"unknown mechanism {name!r}")  # pragma: no cover - parse rejects these


async def _validated_names(ctx: _Context, ip: Address) -> list[str]:
    """Names of ``ip`` whose forward lookup gives ``ip`` back (§5.5); lookup errors count as no names."""
    try:
        ptrs = (await ctx.resolver.lookup(ip.reverse_pointer, "PTR")).records
    except DnsTempError:
        return []
    ctx.count_void(not ptrs)
    rdtype = "A" if ip.version == 4 else "AAAA"
    names = []
    for name in ptrs[:MAX_NAMES]:
        try:
            addresses = (await ctx.resolver.lookup(name, rdtype)).records
        except DnsTempError:
            continue
        if any(_in_net(ip, a, None, None) for a in addresses):
            names.append(name.lower().rstrip("."))
    return names


async def _explain(ctx: _Context, domain: str, exp: str) -> str:
    """The exp= text for a fail; any problem gives no explanation (§6.2)."""
    try:
        target = await _expand(ctx, exp, domain)
        records = (await ctx.resolver.txt(target)).records
        if len(records) != 1:
            return ""
        text = await _expand(ctx, records[0], domain, explanation=True)
    except (PermError, TempError, DnsTempError):
        return ""
    return text if text.isascii() and text.isprintable() else ""


def _check_macros(text: str) -> None:
    rest = _MACRO.sub("", text)
    if "%" in rest:
        raise PermError(f"bad macro in {text!r}")


async def _expand(ctx: _Context, text: str, domain: str, explanation: bool = False) -> str:
    """Macro expansion (§7); a domain-spec result longer than 253 characters loses labels on the left."""
    _check_macros(text)
    out: list[str] = []
    pos = 0
    for m in _MACRO.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        if m.group(5):
            out.append("%")
            continue
        if m.group(6):
            out.append(" ")
            continue
        if m.group(7):
            out.append("%20")
            continue
        letter = m.group(1)
        value = await _macro_value(ctx, letter.lower(), domain, explanation)
        delimiters = m.group(4) or "."
        parts = re.split("[" + re.escape(delimiters) + "]", value)
        if m.group(3):
            parts.reverse()
        if m.group(2):
            count = int(m.group(2))
            if count == 0:
                raise PermError("macro with zero labels")
            parts = parts[-count:]
        value = ".".join(parts)
        if letter.isupper():
            value = urllib.parse.quote(value, safe="")
        out.append(value)
    out.append(text[pos:])
    result = "".join(out)
    if not explanation:
        result = result.rstrip(".")
        while len(result) > 253 and "." in result:
            result = result.split(".", 1)[1]
    return result


async def _macro_value(ctx: _Context, letter: str, domain: str, explanation: bool) -> str:
    local, _, sender_domain = ctx.sender.rpartition("@")
    if letter == "s":
        return ctx.sender
    if letter == "l":
        return local or "postmaster"
    if letter == "o":
        return sender_domain
    if letter == "d":
        return domain
    if letter == "i":
        if ctx.ip.version == 4:
            return str(ctx.ip)
        return ".".join(ctx.ip.exploded.replace(":", ""))
    if letter == "v":
        return "in-addr" if ctx.ip.version == 4 else "ip6"
    if letter == "h":
        return ctx.helo
    if letter == "p":
        names = await _validated_names(ctx, ctx.ip)
        exact = [n for n in names if n == domain or n.endswith("." + domain)]
        return (exact or names or ["unknown"])[0]
    if letter in ("c", "r", "t"):
        if not explanation:
            raise PermError(f"macro %{{{letter}}} outside exp= text")
        if letter == "c":
            return str(ctx.ip)
        if letter == "r":
            return "unknown"
        return str(int(time.time()))
    raise PermError(f"unknown macro letter {letter!r}")
