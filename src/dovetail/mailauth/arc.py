"""ARC (RFC 8617): judge the chain of custody a message arrives with, and seal what we forward.

``verify_arc`` follows RFC 8617 §5.2: collect the ARC sets, ``none`` without any; ``fail`` when the
latest seal already says ``cv=fail``, when the numbering or the ``cv=`` values are wrong (instance 1
``none``, later ones ``pass``), when the newest ARC-Message-Signature does not verify, or when any
ARC-Seal does not; ``pass`` otherwise. ``oldest_pass`` is the oldest instance whose AMS still verifies
with every newer one (0 when all do), what a receiver uses to trust a list's forwarded results.

``seal`` adds our ARC set to a message we forward: ARC-Authentication-Results (our verdicts),
ARC-Message-Signature (a DKIM-style signature of the message, ``i=``, relaxed/relaxed) and ARC-Seal
over all sets (only ours when the chain failed), signed with the forwarding domain's DKIM key.

Written here rather than taken from dkimpy's ``arc_verify``/``arc_sign`` for the same reasons as
``dkimverify``: dkimpy looks keys up with a blocking ``dnsfunc`` and does RSA in pure Python, and ARC is
DKIM's signature with other tags, so this module reuses ``dkimverify``'s parsing, key cache and
``cryptography`` math. The tests seal with dkimpy and verify here, and the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Protocol

from .dkimcanon import DkimFormatError, relaxed_body, relaxed_header
from .dkimverify import (
    KEYS,
    KeyCache,
    KeyProblem,
    ParsedMessage,
    TagError,
    check_signature,
    parse_tags,
    verify_crypto,
    without_b,
)
from .dnserrors import TxtLookup
from .results import ArcResult

__all__ = ["ArcResult", "SealingKey", "seal", "verify_arc"]

MAX_INSTANCES = 50  # RFC 8617 §4.2.1
ARC_NAMES = (b"arc-authentication-results", b"arc-message-signature", b"arc-seal")
SEAL_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
# What our ARC-Message-Signature covers: what a receiver shows or acts on, and the DKIM signatures.
AMS_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
               "mime-version", "content-type", "content-transfer-encoding", "list-id", "list-unsubscribe",
               "dkim-signature")

_AAR_INSTANCE = re.compile(rb"\A[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})[ \t\r\n]*;")


class SealingKey(Protocol):
    """A private key to seal with (``outbound.dkim.SigningKey`` is one)."""

    @property
    def domain(self) -> str: ...

    @property
    def selector(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def sign_digest_input(self, data: bytes) -> bytes: ...


@dataclass
class _Set:
    aar: bytes | None = None
    ams: bytes | None = None
    seal: bytes | None = None
    seal_tags: dict[str, str] | None = None


class _Broken(Exception):
    """A structural flaw: the chain fails with this reason."""


def _instance(name: bytes, raw: bytes) -> tuple[int, dict[str, str] | None]:
    value = raw.partition(b":")[2]
    if name == b"arc-authentication-results":
        m = _AAR_INSTANCE.match(value)
        if m is None:
            raise _Broken("ARC-Authentication-Results without i=")
        return int(m.group(1)), None
    try:
        tags = parse_tags(value.decode("utf-8", "replace"))
    except TagError as exc:
        raise _Broken(f"{name.decode()}: {exc}") from None
    i = tags.get("i", "")
    if not i.isdigit() or len(i) > 3:
        raise _Broken(f"{name.decode()} without a valid i=")
    return int(i), tags


def _collect(msg: ParsedMessage) -> dict[int, _Set]:
    """The ARC sets by instance; ``_Broken`` for duplicates or bad instance numbers."""
    sets: dict[int, _Set] = {}
    for name, raw in msg.fields:
        if name not in ARC_NAMES:
            continue
        i, tags = _instance(name, raw)
        if not 1 <= i <= MAX_INSTANCES:
            raise _Broken(f"ARC instance i={i} out of range")
        s = sets.setdefault(i, _Set())
        attr = {b"arc-authentication-results": "aar", b"arc-message-signature": "ams", b"arc-seal": "seal"}[name]
        if getattr(s, attr) is not None:
            raise _Broken(f"two {name.decode()} with i={i}")
        setattr(s, attr, raw)
        if attr == "seal":
            s.seal_tags = tags
    return sets


def _sets_input(sets: dict[int, _Set], upto: int) -> bytes:
    """What the ARC-Seal of instance ``upto`` signs before itself (RFC 8617 §5.1.1): every set before it
    in order, then its own AAR and AMS, all relaxed."""
    out = []
    for i in range(1, upto + 1):
        s = sets[i]
        for raw in (s.aar, s.ams, s.seal) if i < upto else (s.aar, s.ams):
            assert raw is not None
            out.append(relaxed_header(raw) + b"\r\n")
    return b"".join(out)


async def _seal_valid(sets: dict[int, _Set], i: int, txt: TxtLookup, keys: KeyCache) -> str | None:
    """None when the ARC-Seal of instance ``i`` verifies, else why not (prefixed ``temp:`` for DNS trouble)."""
    s = sets[i]
    tags = s.seal_tags or {}
    missing = [t for t in ("i", "a", "b", "cv", "d", "s") if t not in tags]
    if missing:
        return f"ARC-Seal i={i} has no {missing[0]}="
    if "h" in tags:
        return f"ARC-Seal i={i} has an h= tag"
    algorithm = tags["a"].lower()
    if algorithm not in SEAL_ALGORITHMS:
        return f"ARC-Seal i={i}: unknown algorithm a={algorithm[:30]}"
    try:
        signature = base64.b64decode(re.sub(r"[ \t\r\n]", "", tags["b"]), validate=True)
        key = await keys.get(txt, tags["s"].lower(), tags["d"].lower().rstrip("."))
    except KeyProblem as exc:
        return ("temp:" if exc.result == "temperror" else "") + f"ARC-Seal i={i}: {exc.reason}"
    except ValueError:
        return f"ARC-Seal i={i}: b= is not base64"
    if (key.kind == "ed25519") != (algorithm == "ed25519-sha256"):
        return f"ARC-Seal i={i}: key type {key.kind} does not match a={algorithm}"
    assert s.seal is not None
    if not verify_crypto(key, algorithm, _sets_input(sets, i) + without_b(s.seal, "relaxed"), signature):
        return f"ARC-Seal i={i} did not verify"
    return None


async def verify_arc(message: bytes, txt: TxtLookup, *, keys: KeyCache = KEYS,
                     msg: ParsedMessage | None = None) -> ArcResult:
    """The ARC chain verdict of ``message`` (RFC 8617 §5.2). Never raises for bad input."""
    try:
        msg = msg or ParsedMessage(message)
    except DkimFormatError:
        return ArcResult("fail" if b"arc-seal:" in message.lower() else "none", reason="malformed header section")
    try:
        sets = _collect(msg)
    except _Broken as exc:
        return ArcResult("fail", reason=str(exc))
    if not sets:
        return ArcResult("none")
    n = max(sets)
    sealers = tuple((sets[i].seal_tags or {}).get("d", "").lower() for i in sorted(sets))

    def failed(reason: str, temporary: bool = False) -> ArcResult:
        return ArcResult("fail", n, reason, None, sealers, temporary)

    latest = sets[n].seal_tags
    if latest is not None and latest.get("cv", "").lower() == "fail":
        return failed(f"ARC-Seal i={n} says cv=fail")
    for i in range(1, n + 1):
        s = sets.get(i)
        if s is None or s.aar is None or s.ams is None or s.seal is None:
            return failed(f"ARC set i={i} is incomplete")
        cv = (s.seal_tags or {}).get("cv", "").lower()
        if cv != ("none" if i == 1 else "pass"):
            return failed(f"ARC-Seal i={i} has cv={cv[:10]}")
    newest = await check_signature(msg, sets[n].ams or b"", txt, arc=True, keys=keys)
    if newest.result != "pass":
        return failed(f"ARC-Message-Signature i={n}: {newest.reason}", newest.result == "temperror")
    oldest_pass = 0
    for i in range(n - 1, 0, -1):
        older = await check_signature(msg, sets[i].ams or b"", txt, arc=True, keys=keys)
        if older.result != "pass":
            oldest_pass = i + 1
            break
    for i in range(n, 0, -1):
        problem = await _seal_valid(sets, i, txt, keys)
        if problem is not None:
            temporary = problem.startswith("temp:")
            return failed(problem.removeprefix("temp:"), temporary)
    return ArcResult("pass", n, "", oldest_pass, sealers, results=tuple(_aar_resinfo(sets[i].aar or b"")
                                                                         for i in range(1, n + 1)))


def _aar_resinfo(raw: bytes) -> str:
    """The ARC-Authentication-Results value without its ``i=N;`` prefix: ``authserv-id; resinfo...``."""
    value = raw.partition(b":")[2]
    m = _AAR_INSTANCE.match(value)
    return (value[m.end():] if m else value).decode("utf-8", "replace").strip()


# --- sealing ---------------------------------------------------------------------------------------


def _fold_b64(value: str, width: int = 76) -> str:
    return "\r\n\t".join(value[i:i + width] for i in range(0, len(value), width))


def _sign_field(name: str, tags: list[str], data: bytes, key: SealingKey) -> bytes:
    """``name: tags... b=<signature>`` with the signature over ``data`` + the field with ``b=`` empty."""
    header = f"{name}: " + "\r\n\t".join(tags) + "\r\n\tb="
    signature = key.sign_digest_input(data + relaxed_header(header.encode()))
    return (header + _fold_b64(base64.b64encode(signature).decode())).encode()


def seal(message: bytes, key: SealingKey, *, authserv_id: str, results: str, chain: ArcResult,
         timestamp: int | None = None, headers: tuple[str, ...] = AMS_HEADERS) -> bytes:
    """Our ARC set for ``message`` as header lines (CRLF-terminated) to prepend: ARC-Seal, then
    ARC-Message-Signature, then ARC-Authentication-Results. ``results`` is the resinfo of our
    Authentication-Results (``dkim=pass header.d=...; spf=...``; empty for none); ``chain`` is the
    verdict on the chain the message arrived with (its ``cv=``). ``b""`` when the chain is at its
    instance limit, or when the message cannot be parsed."""
    try:
        msg = ParsedMessage(message)
        sets = _collect(msg)
    except DkimFormatError:
        return b""
    except _Broken:
        sets = {}
        n = max((i for name, raw in msg.fields if name in ARC_NAMES
                 for i in [_loose_instance(raw)] if i is not None), default=0)
    else:
        n = max(sets, default=0)
    if n >= MAX_INSTANCES:
        return b""
    instance = n + 1
    cv = "none" if n == 0 else ("pass" if chain.result == "pass" else "fail")
    if cv == "pass" and any(sets.get(i) is None or None in (sets[i].aar, sets[i].ams, sets[i].seal)
                            for i in range(1, instance)):
        cv = "fail"  # a verdict that does not fit the message: never seal a broken chain as passed
    t = int(time.time()) if timestamp is None else timestamp
    resinfo = results.strip().strip(";").strip() or "none"
    aar = f"ARC-Authentication-Results: i={instance}; {authserv_id};\r\n\t{resinfo}".encode()

    h = [name for name in headers for _ in msg.instances(name.encode())]
    signed = msg.signed_headers(h, "relaxed")
    bh = base64.b64encode(hashlib.sha256(relaxed_body(msg.body)).digest()).decode()
    ams = _sign_field("ARC-Message-Signature", [
        f"i={instance}; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector};",
        f"t={t};", f"h={':'.join(h)};", f"bh={bh};"], signed, key)

    own = _Set(aar=aar, ams=ams)
    if cv == "fail":  # a failed chain: our seal covers our own set only (RFC 8617 §5.1.1)
        data = _sets_input({1: own}, 1)
    else:
        data = _sets_input({**sets, instance: own}, instance)
    tags = [f"i={instance}; a={key.algorithm}; t={t}; cv={cv};", f"d={key.domain}; s={key.selector};"]
    seal_field = _sign_field("ARC-Seal", tags, data, key)
    return seal_field + b"\r\n" + ams + b"\r\n" + aar + b"\r\n"


def _loose_instance(raw: bytes) -> int | None:
    m = re.search(rb"(?:^|[:;])[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})", raw.partition(b":")[2])
    return int(m.group(1)) if m else None
