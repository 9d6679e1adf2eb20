"""DKIM verification (RFC 6376) of every signature of a message, through dkimpy.

``verify_dkim`` is the one entry point the MX uses; its body may be replaced by a faster verifier
with the same contract. dkimpy wants a synchronous ``dnsfunc``: the keys of all signatures are
fetched first through the process's async cached resolver, then dkimpy verifies in a worker thread
against those answers, so the event loop neither blocks on DNS nor on hashing a large body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from .dns import DnsTempError, Lookup
from .results import DkimResult

MAX_SIGNATURES = 8  # signatures verified per message; more are reported as policy (not checked)
MIN_KEY_BITS = 1024

TxtLookup = Callable[[str], Awaitable[Lookup]]

# dkimpy logs every failed signature at error level; the result says it once, in the A-R header and
# the queue id's log line.
_QUIET = logging.getLogger("dovetail.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _signature_headers(message: bytes) -> list[bytes]:
    """The values of the DKIM-Signature headers, top down (unfolded enough to parse tags)."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    values: list[bytes] = []
    collecting = False
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t"):
            if collecting:
                values[-1] += b" " + line.strip()
            continue
        name, sep, value = line.partition(b":")
        collecting = bool(sep) and name.strip().lower() == b"dkim-signature"
        if collecting:
            values.append(value.strip())
    return values


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return parse_tag_value(value)
    except (InvalidTagValueList, ValueError, IndexError):
        return None


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()


async def verify_dkim(message: bytes, txt: TxtLookup) -> list[DkimResult]:
    """One result per DKIM-Signature header (none: an empty list). Never raises for bad input."""
    headers = _signature_headers(message)
    if not headers:
        return []
    keys: dict[str, bytes | None | DnsTempError] = {}
    parsed = [_tags(h) for h in headers[:MAX_SIGNATURES]]
    for tags in parsed:
        if not tags or b"d" not in tags or b"s" not in tags:
            continue
        name = f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}"
        if name in keys:
            continue
        try:
            lookup = await txt(name)
            keys[name] = lookup.records[0].encode() if len(lookup.records) == 1 else None
        except DnsTempError as exc:
            keys[name] = exc
    results = await asyncio.to_thread(_verify_all, message, parsed, keys)
    for extra in headers[MAX_SIGNATURES:]:
        t = _tags(extra) or {}
        results.append(DkimResult(_text(t.get(b"d")), _text(t.get(b"s")), "policy", _text(t.get(b"a")),
                                  f"more than {MAX_SIGNATURES} signatures: not verified"))
    return results


def _verify_all(message: bytes, parsed: list[dict[bytes, bytes] | None],
                keys: dict[str, bytes | None | DnsTempError]) -> list[DkimResult]:
    try:
        verifier = dkim.DKIM(message, minkey=MIN_KEY_BITS, logger=_QUIET)
    except Exception as exc:  # dkimpy refuses a message it cannot split into headers and body
        return [DkimResult("", "", "permerror", reason=f"message not parsable: {exc}") for _ in parsed]
    return [_verify_one(verifier, i, tags, keys) for i, tags in enumerate(parsed)]


def _verify_one(verifier: dkim.DKIM, index: int, tags: dict[bytes, bytes] | None,
                keys: dict[str, bytes | None | DnsTempError]) -> DkimResult:
    if tags is None:
        return DkimResult("", "", "permerror", reason="malformed DKIM-Signature tags")
    domain, selector, algorithm = _text(tags.get(b"d")), _text(tags.get(b"s")), _text(tags.get(b"a")).lower()
    limited = b"l" in tags
    b_prefix = _text(tags.get(b"b")).replace(" ", "")[:8]

    def result(res: str, reason: str = "", bits: int | None = None) -> DkimResult:
        return DkimResult(domain, selector, res, algorithm, reason, limited, bits, b_prefix)

    if not domain or not selector:
        return result("permerror", "signature without d= or s=")
    name = f"{selector}._domainkey.{domain}"
    key = keys.get(name)
    if isinstance(key, DnsTempError):
        return result("temperror", f"key lookup: {key}")
    if key is None:
        return result("permerror", f"no key record at {name}")
    try:
        dkim.evaluate_pk(name.encode(), key)
    except Exception as exc:  # KeyFormatError, or a decoding error of p=
        return result("permerror", f"unusable key record: {exc}")
    verifier.pk, verifier.keysize = None, 0

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        return key if isinstance(key, bytes) else None

    try:
        ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except dkim.KeyFormatError as exc:
        text = str(exc)
        if "too small" in text:
            return result("policy", text, verifier.keysize or None)
        return result("permerror", text)
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):  # the content changed after signing: a failed signature
            return result("fail", "body hash did not verify", verifier.keysize or None)
        return result("permerror", str(exc))
    except dkim.DKIMException as exc:
        return result("permerror", str(exc))
    except Exception as exc:  # a bad signature must not become a 4xx/5xx the policy did not ask for
        return result("permerror", f"{exc.__class__.__name__}: {exc}")
    bits = verifier.keysize or None
    if ok:
        reason = "rsa-sha1 is deprecated (RFC 8301)" if algorithm == "rsa-sha1" else ""
        return result("pass", reason, bits)
    return result("fail", "signature did not verify", bits)
