"""DKIM verification (RFC 6376) of every signature of a message, RSA-SHA256 and Ed25519-SHA256 (RFC 8463).

Hand-written rather than ``dkim.verify`` from dkimpy for two reasons: dkimpy's RSA is pure Python and
its key lookup is a blocking ``dnsfunc``; here the public-key math is one call into ``cryptography``
(OpenSSL), the canonicalisation is shared with the outbound signer (``mailauth.dkimcanon``), and keys
come from an async ``TxtLookup`` (``mailauth.dnserrors``). The tests check every verdict against dkimpy.

Each signature gets a ``DkimResult``; nothing here raises for bad input. Results (RFC 8601 §2.7.1):

``pass``       the signature verified with an acceptable key;
``fail``       it did not verify (body hash or signature mismatch, or a body shorter than ``l=``);
``policy``     it verified, but uses rsa-sha1, which RFC 8301 §3.1 forbids verifiers to count as valid:
               reported as such, never as ``pass``;
``permerror``  it cannot be verified and never will: malformed or missing tags, unknown algorithm,
               expired (``x=``) or future (``t=``) timestamps, no key record, a revoked key, a key of the
               wrong type, an RSA key under 1024 bits (RFC 8301 §3.2) or over 8192;
``temperror``  the key lookup failed for now (``DnsTempError``).

``l=`` is honoured (only that many canonical body octets are hashed) but the result carries
``body_length_limited`` so the policy can treat content appended after the signed part as the risk it
is. Parsed public keys are cached per (selector, domain): for the TTL when the lookup tells it
(``TxtRecords.ttl``), otherwise by record text, so an unchanged record is never parsed twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .dkimcanon import DkimFormatError, relaxed_body, relaxed_header, simple_body, split_message, to_crlf
from .dnserrors import DnsPermError, DnsTempError, TxtLookup

MAX_SIGNATURES = 10  # signatures checked per message; any further one is a permerror
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
MAX_RSA_BITS = 8192  # larger keys cost a verifier CPU for nothing a sender needs
CLOCK_SKEW = 300  # seconds a t= may lie in the future
ALGORITHMS = ("rsa-sha256", "ed25519-sha256", "rsa-sha1")
KEY_CACHE_SIZE = 10_000

_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TAG_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e]+(?:[ \t\r\n]+[\x21-\x3a\x3c-\x7e]+)*\Z")
_FWS = re.compile(r"[ \t\r\n]+")
_B_VALUE = re.compile(rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*")
_DIGITS = re.compile(r"[0-9]{1,76}\Z")


@dataclass(frozen=True)
class DkimResult:
    """The verdict on one DKIM-Signature. ``key_bits`` is None when no key was reached."""

    domain: str
    selector: str
    result: str  # pass | fail | policy | permerror | temperror
    algorithm: str
    reason: str
    body_length_limited: bool
    key_bits: int | None
    identity: str = ""  # i= (the default, @d, when absent)
    header_b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    unsigned_octets: int = 0  # canonical body octets after the l= limit (content anyone may have appended)


class TagError(ValueError):
    """A tag list that does not follow RFC 6376 §3.2."""


def parse_tags(value: str) -> dict[str, str]:
    """The tags of a tag list (RFC 6376 §3.2): names case-sensitive, whitespace around values dropped.

    ``TagError`` for a duplicate tag, a bad tag name, a missing ``=``, or a value with characters the
    grammar does not allow. An empty tag-spec is allowed only at the end (``a=1;``).
    """
    tags: dict[str, str] = {}
    specs = value.split(";")
    for n, spec in enumerate(specs):
        if not spec.strip(" \t\r\n"):
            if n == len(specs) - 1:
                break
            raise TagError("empty tag")
        name, eq, val = spec.partition("=")
        name = name.strip(" \t\r\n")
        if not eq:
            raise TagError(f"tag {name[:20]!r} has no '='")
        if not _TAG_NAME.match(name):
            raise TagError(f"bad tag name {name[:20]!r}")
        if name in tags:
            raise TagError(f"duplicate tag {name!r}")
        val = val.strip(" \t\r\n")
        if val and not _TAG_VALUE.match(val):
            raise TagError(f"bad value for tag {name!r}")
        tags[name] = val
    return tags


def _b64(value: str) -> bytes:
    return base64.b64decode(_FWS.sub("", value), validate=True)


# --- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A parsed key record (RFC 6376 §3.6.1)."""

    kind: str  # rsa | ed25519
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    bits: int
    hashes: frozenset[str] | None  # h=, None for any
    strict: bool  # t=s: i= must be in d= itself, not a subdomain
    testing: bool  # t=y


class KeyProblem(Exception):
    """Why a signature's key cannot be used: ``result`` is permerror or temperror."""

    def __init__(self, result: str, reason: str, bits: int | None = None) -> None:
        super().__init__(reason)
        self.result, self.reason, self.bits = result, reason, bits


def parse_key_record(text: str) -> PublicKey:
    """A public key from a ``v=DKIM1; k=...; p=...`` record; ``KeyProblem`` (permerror) if unusable."""
    try:
        tags = parse_tags(text)
    except TagError as exc:
        raise KeyProblem("permerror", f"key record: {exc}") from None
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise KeyProblem("permerror", "key record: v= is not DKIM1")
    kind = tags.get("k", "rsa").lower()
    services = {s.strip() for s in tags.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        raise KeyProblem("permerror", "key record is not for email (s=)")
    if "p" not in tags:
        raise KeyProblem("permerror", "key record has no p=")
    if not tags["p"]:
        raise KeyProblem("permerror", "key revoked (empty p=)")
    try:
        der = _b64(tags["p"])
    except (binascii.Error, ValueError):
        raise KeyProblem("permerror", "key record: p= is not base64") from None
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    if kind == "rsa":
        try:
            loaded = serialization.load_der_public_key(der)
        except (ValueError, TypeError):
            raise KeyProblem("permerror", "key record: p= is not an RSA public key") from None
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise KeyProblem("permerror", "key record: k=rsa but p= is another key type")
        key, bits = loaded, loaded.key_size
        if bits < MIN_RSA_BITS:
            raise KeyProblem("permerror", f"RSA key of {bits} bits is too short (RFC 8301)", bits)
        if bits > MAX_RSA_BITS:
            raise KeyProblem("permerror", f"RSA key of {bits} bits is over {MAX_RSA_BITS}", bits)
    elif kind == "ed25519":
        if len(der) != 32:
            raise KeyProblem("permerror", "key record: an Ed25519 key is 32 octets")
        key, bits = ed25519.Ed25519PublicKey.from_public_bytes(der), 256
    else:
        raise KeyProblem("permerror", f"key record: unknown key type k={kind[:20]}")
    hashes_ = frozenset(h.strip().lower() for h in tags["h"].split(":")) if "h" in tags else None
    flags = {f.strip() for f in tags.get("t", "").split(":")}
    return PublicKey(kind, key, bits, hashes_, "s" in flags, "y" in flags)


class KeyCache:
    """Parsed public keys per (selector, domain), kept for the TXT TTL when the lookup reports one."""

    def __init__(self, size: int = KEY_CACHE_SIZE) -> None:
        self.size = size
        self._names: OrderedDict[str, tuple[float, PublicKey | KeyProblem]] = OrderedDict()
        self._texts: OrderedDict[str, PublicKey | KeyProblem] = OrderedDict()
        self.lookups = 0  # TXT lookups made, for tests and metrics

    def clear(self) -> None:
        self._names.clear()
        self._texts.clear()

    async def get(self, txt: TxtLookup, selector: str, domain: str) -> PublicKey:
        name = f"{selector}._domainkey.{domain}"
        now = time.monotonic()
        hit = self._names.get(name)
        if hit is not None:
            if hit[0] > now:
                return _unwrap(hit[1])
            del self._names[name]
        self.lookups += 1
        try:
            records = await txt(name)
        except DnsTempError as exc:
            raise KeyProblem("temperror", f"key lookup: {exc}") from None
        except DnsPermError as exc:
            raise KeyProblem("permerror", f"key lookup: {exc}") from None
        found: PublicKey | KeyProblem = KeyProblem("permerror", f"no key record at {name}")
        for text in records:
            found = self._parse(text)
            if isinstance(found, PublicKey):
                break
        ttl = getattr(records, "ttl", None)
        if ttl:
            self._names[name] = (now + float(ttl), found)
            if len(self._names) > self.size:
                self._names.popitem(last=False)
        return _unwrap(found)

    def _parse(self, text: str) -> PublicKey | KeyProblem:
        hit = self._texts.get(text)
        if hit is not None:
            self._texts.move_to_end(text)
            return hit
        try:
            parsed: PublicKey | KeyProblem = parse_key_record(text)
        except KeyProblem as exc:
            parsed = exc
        self._texts[text] = parsed
        if len(self._texts) > self.size:
            self._texts.popitem(last=False)
        return parsed


def _unwrap(found: PublicKey | KeyProblem) -> PublicKey:
    if isinstance(found, KeyProblem):
        raise KeyProblem(found.result, found.reason, found.bits)
    return found


KEYS = KeyCache()  # the process's key cache


# --- the message -----------------------------------------------------------------------------------


class ParsedMessage:
    """A message split once, with canonical body hashes kept for every signature that asks."""

    def __init__(self, message: bytes) -> None:
        self.fields, self.body = split_message(to_crlf(message))
        self._bodies: dict[str, bytes] = {}
        self._hashes: dict[tuple[str, str, int | None], bytes] = {}
        self._by_name: dict[bytes, list[bytes]] | None = None

    def canonical_body(self, canon: str) -> bytes:
        body = self._bodies.get(canon)
        if body is None:
            body = self._bodies[canon] = relaxed_body(self.body) if canon == "relaxed" else simple_body(self.body)
        return body

    def body_hash(self, canon: str, hash_name: str, length: int | None) -> bytes | None:
        """The hash of the canonical body (its first ``length`` octets); None when it is shorter."""
        key = (canon, hash_name, length)
        digest = self._hashes.get(key)
        if digest is None:
            body = self.canonical_body(canon)
            if length is not None:
                if length > len(body):
                    return None
                body = body[:length]
            digest = self._hashes[key] = hashlib.new(hash_name, body).digest()
        return digest

    def instances(self, name: bytes) -> list[bytes]:
        if self._by_name is None:
            by_name: dict[bytes, list[bytes]] = {}
            for field_name, raw in self.fields:
                by_name.setdefault(field_name, []).append(raw)
            self._by_name = by_name
        return self._by_name.get(name, [])

    def signed_headers(self, names: list[str], canon: str) -> bytes:
        """The header data of ``h=`` (RFC 6376 §5.4.2): each name takes its instances bottom-up; a name
        with no instance left contributes nothing."""
        used: dict[bytes, int] = {}
        out = []
        for name in names:
            key = name.encode()
            instances = self.instances(key)
            n = used.get(key, 0)
            if n >= len(instances):
                continue
            used[key] = n + 1
            raw = instances[len(instances) - 1 - n]
            out.append((relaxed_header(raw) if canon == "relaxed" else raw) + b"\r\n")
        return b"".join(out)


def without_b(raw: bytes, canon: str) -> bytes:
    """The signature field itself as it is hashed: ``b=`` emptied, canonicalised, no final CRLF."""
    name, colon, value = raw.partition(b":")
    stripped = name + colon + _B_VALUE.sub(rb"\1", value, count=1)
    return relaxed_header(stripped) if canon == "relaxed" else stripped


def verify_crypto(key: PublicKey, algorithm: str, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            digest = hashes.SHA1() if algorithm == "rsa-sha1" else hashes.SHA256()  # noqa: S303
            key.key.verify(signature, data, padding.PKCS1v15(), digest)
        else:
            key.key.verify(signature, hashlib.sha256(data).digest())  # RFC 8463 §3
    except (InvalidSignature, ValueError):
        return False
    return True


# --- one signature ---------------------------------------------------------------------------------


@dataclass
class Signature:
    """The checked tags of a DKIM-Signature or ARC-Message-Signature."""

    tags: dict[str, str]
    domain: str
    selector: str
    algorithm: str
    header_canon: str
    body_canon: str
    headers: list[str]
    bh: bytes
    b: bytes
    length: int | None
    identity: str


class SignatureError(ValueError):
    """A signature field whose tags cannot be used (a permerror with this reason)."""


def parse_signature(value: str, *, arc: bool = False, now: float | None = None) -> Signature:
    """Check the tags of a DKIM-Signature (``arc``: an ARC-Message-Signature, RFC 8617 §4.1.2)."""
    try:
        tags = parse_tags(value)
    except TagError as exc:
        raise SignatureError(str(exc)) from None
    required = ("i", "a", "b", "bh", "d", "h", "s") if arc else ("v", "a", "b", "bh", "d", "h", "s")
    missing = [t for t in required if t not in tags]
    if missing:
        raise SignatureError(f"missing tag {missing[0]}=")
    if not arc and tags["v"] != "1":
        raise SignatureError(f"unknown version v={tags['v'][:10]}")
    algorithm = tags["a"].lower()
    if algorithm not in ALGORITHMS:
        raise SignatureError(f"unknown algorithm a={algorithm[:30]}")
    canon = tags.get("c", "relaxed/relaxed" if arc else "simple/simple").lower()
    header_canon, _, body_canon = canon.partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise SignatureError(f"unknown canonicalization c={canon[:30]}")
    domain = tags["d"].lower().rstrip(".")
    selector = tags["s"].lower()
    if not domain or not selector or "._domainkey" in selector:
        raise SignatureError("empty d= or s=")
    if "q" in tags and "dns/txt" not in [q.strip().lower() for q in tags["q"].split(":")]:
        raise SignatureError(f"unknown query method q={tags['q'][:30]}")
    headers = [h.strip(" \t\r\n").lower() for h in tags["h"].split(":")]
    if "from" not in headers:
        raise SignatureError("h= does not sign From")
    if arc and "arc-seal" in headers:
        raise SignatureError("an ARC-Message-Signature must not sign ARC-Seal")
    try:
        bh, b = _b64(tags["bh"]), _b64(tags["b"])
    except (binascii.Error, ValueError):
        raise SignatureError("b= or bh= is not base64") from None
    if not b or not bh:
        raise SignatureError("empty b= or bh=")
    length = None
    if "l" in tags:
        if not _DIGITS.match(tags["l"]):
            raise SignatureError("l= is not a number")
        length = int(tags["l"])
    identity = ""
    if not arc:
        identity = tags.get("i", f"@{domain}")
        idomain = identity.rpartition("@")[2].lower().rstrip(".")
        if "@" not in identity or not (idomain == domain or idomain.endswith("." + domain)):
            raise SignatureError("i= is not within d=")
    now = time.time() if now is None else now
    for t in ("t", "x"):
        if t in tags and not _DIGITS.match(tags[t]):
            raise SignatureError(f"{t}= is not a number")
    if "t" in tags and int(tags["t"]) > now + CLOCK_SKEW:
        raise SignatureError("signature timestamp t= in the future")
    if "x" in tags:
        if "t" in tags and int(tags["x"]) < int(tags["t"]):
            raise SignatureError("x= before t=")
        if int(tags["x"]) < now:
            raise SignatureError("signature expired (x=)")
    return Signature(tags, domain, selector, algorithm, header_canon, body_canon, headers, bh, b, length, identity)


async def check_signature(msg: ParsedMessage, raw: bytes, txt: TxtLookup, *, arc: bool = False,
                          keys: KeyCache = KEYS, now: float | None = None) -> DkimResult:
    """The verdict on one signature field ``raw`` (as it stands in ``msg.fields``)."""
    value = raw.partition(b":")[2].decode("utf-8", "replace")
    try:
        sig = parse_signature(value, arc=arc, now=now)
    except SignatureError as exc:
        tags = _loose_tags(value)
        return DkimResult(tags.get("d", "").lower(), tags.get("s", "").lower(), "permerror",
                          tags.get("a", "").lower(), str(exc), "l" in tags, None)
    limited = sig.length is not None

    def result(verdict: str, reason: str, bits: int | None, unsigned: int = 0) -> DkimResult:
        return DkimResult(sig.domain, sig.selector, verdict, sig.algorithm, reason, limited, bits, sig.identity,
                          _FWS.sub("", sig.tags["b"])[:12], unsigned)

    try:
        key = await keys.get(txt, sig.selector, sig.domain)
    except KeyProblem as exc:
        return result(exc.result, exc.reason, exc.bits)
    if (key.kind == "ed25519") != (sig.algorithm == "ed25519-sha256"):
        return result("permerror", f"key type {key.kind} does not match a={sig.algorithm}", key.bits)
    hash_name = "sha1" if sig.algorithm == "rsa-sha1" else "sha256"
    if key.hashes is not None and hash_name not in key.hashes:
        return result("permerror", f"key does not allow {hash_name} (h=)", key.bits)
    if key.strict and sig.identity.rpartition("@")[2].lower() != sig.domain:
        return result("permerror", "key is strict (t=s) but i= is a subdomain of d=", key.bits)
    digest = msg.body_hash(sig.body_canon, hash_name, sig.length)
    if digest is None:
        return result("fail", "body is shorter than l=", key.bits)
    if digest != sig.bh:
        return result("fail", "body hash did not verify", key.bits)
    data = msg.signed_headers(sig.headers, sig.header_canon) + without_b(raw, sig.header_canon)
    if not verify_crypto(key, sig.algorithm, data, sig.b):
        return result("fail", "signature did not verify", key.bits)
    notes = []
    unsigned = 0
    if limited:
        unsigned = len(msg.canonical_body(sig.body_canon)) - (sig.length or 0)
        notes.append(f"l= leaves {unsigned} body octets unsigned" if unsigned else "l= covers the whole body")
    if key.testing:
        notes.append("key in testing mode (t=y)")
    if sig.algorithm == "rsa-sha1":
        return result("policy", "; ".join(["rsa-sha1 verified but not accepted (RFC 8301)", *notes]), key.bits,
                      unsigned)
    return result("pass", "; ".join(notes), key.bits, unsigned)


def _loose_tags(value: str) -> dict[str, str]:
    """What can be read of a malformed tag list, to name the signature in its permerror."""
    tags: dict[str, str] = {}
    for spec in value.split(";"):
        name, eq, val = spec.partition("=")
        if eq:
            tags.setdefault(name.strip(" \t\r\n"), _FWS.sub("", val)[:255])
    return tags


async def verify_dkim(message: bytes, txt: TxtLookup, *, keys: KeyCache = KEYS,
                      now: float | None = None) -> list[DkimResult]:
    """One ``DkimResult`` per DKIM-Signature of ``message``, top to bottom; ``[]`` when unsigned."""
    try:
        msg = ParsedMessage(message)
    except DkimFormatError:
        if b"dkim-signature:" in message.lower():
            return [DkimResult("", "", "permerror", "", "malformed header section", False, None)]
        return []
    results = []
    for n, raw in enumerate(msg.instances(b"dkim-signature")):
        if n >= MAX_SIGNATURES:
            tags = _loose_tags(raw.partition(b":")[2].decode("utf-8", "replace"))
            results.append(DkimResult(tags.get("d", "").lower(), tags.get("s", "").lower(), "permerror",
                                      tags.get("a", "").lower(), f"not checked: over {MAX_SIGNATURES} signatures",
                                      "l" in tags, None))
            continue
        results.append(await check_signature(msg, raw, txt, keys=keys, now=now))
    return results
