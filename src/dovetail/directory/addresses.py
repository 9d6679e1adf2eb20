"""Address and name rules of the directory: IDN domains, case, safe mailbox paths.

Domains are stored as lowercase A-labels (``xn--...``) and shown as U-labels; local parts and
tenant names compare case-insensitively. Because a mailbox's local part becomes a directory name, anything that could
walk out of the tenant's folder is refused here, once, for every entry point (CLI, API, SMTP).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import idna


class AddressError(ValueError):
    """An address, domain or name that the directory refuses, with the reason."""


_TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# RFC 5322 atext plus dots; UTF-8 allowed (RFC 6531). Path tricks are excluded separately.
_LOCAL_BAD = re.compile(r"[\x00-\x20\x7f\"(),:;<>@\[\\\]/]")


@lru_cache(maxsize=4096)
def normalize_domain(name: str) -> str:
    """The stored form of a domain: lowercase A-label. Raises AddressError when invalid.

    Remembered per name: the IDNA encoding costs some 50 us, and every login and recipient asks it."""
    text = name.strip().rstrip(".")
    if not text:
        raise AddressError("empty domain")
    try:
        alabel = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(f"invalid domain {name!r}: {exc}") from None
    alabel = alabel.lower()
    if len(alabel) > 253 or "." not in alabel:
        raise AddressError(f"invalid domain {name!r}: needs at least two labels and at most 253 characters")
    for label in alabel.split("."):
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label):
            raise AddressError(f"invalid domain {name!r}: bad label {label!r}")
    return alabel


def display_domain(alabel: str) -> str:
    """The U-label form of a stored domain, for people."""
    try:
        return idna.decode(alabel)
    except idna.IDNAError:
        return alabel


def normalize_local(local: str) -> str:
    """Case-folded NFC local part; refuses what RFC 5321 or our Maildir paths cannot carry.

    NFC (RFC 6532 §3.1) so that composed and decomposed spellings are one mailbox and one directory.
    """
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    local = unicodedata.normalize("NFC", local)
    if not local:
        raise AddressError("empty local part")
    if len(local.encode()) > 64:
        raise AddressError("local part longer than 64 octets")
    if _LOCAL_BAD.search(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"invalid local part {local!r}")
    return local.lower()


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` → (normalized local part, A-label domain)."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at:
        raise AddressError(f"{address!r} is not an address (local@domain)")
    return normalize_local(local), normalize_domain(domain)


def normalize_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}"


def display_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{display_domain(domain)}"


def normalize_tenant(name: str) -> str:
    """The stored form of a tenant name, for lookups: ``ACME`` and `` acme`` name tenant ``acme``."""
    return name.strip().lower()


def check_tenant_name(name: str) -> str:
    """Tenant names become folder names under ``mail/``: a short lowercase slug."""
    text = normalize_tenant(name)
    if not _TENANT_RE.fullmatch(text):
        raise AddressError(
            f"invalid tenant name {name!r}: use 1-63 of a-z, 0-9, '-', '_' starting with a letter or digit")
    return text
