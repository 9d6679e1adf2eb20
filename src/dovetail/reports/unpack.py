"""The report files inside a report message: gzip, zip or plain attachments, decompressed within bounds.

Reporters send DMARC aggregate reports as ``.xml.gz`` or ``.zip`` attachments (Google: zip, Microsoft
and Yahoo: gzip) and TLS-RPT reports as ``application/tlsrpt+gzip`` or ``+json`` (RFC 8460 §5.3).
Everything here comes from a stranger, so every size is capped: the decompressed bytes of one file,
their sum over the message, and the number of zip entries. The caps are checked on the bytes
actually produced, never on the sizes an archive claims about itself (a zip bomb lies there).
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
import zlib
from dataclasses import dataclass
from email.message import EmailMessage

MAX_FILE_BYTES = 20 * 1024 * 1024  # one decompressed report; the biggest real ones are a few MB
MAX_TOTAL_BYTES = 40 * 1024 * 1024  # all files of one message together
MAX_ZIP_ENTRIES = 8
MAX_PARTS = 50

GZIP_TYPES = {"application/gzip", "application/x-gzip", "application/tlsrpt+gzip"}
ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}
PLAIN_TYPES = {"text/xml", "application/xml", "application/json", "application/tlsrpt+json"}


class UnpackError(ValueError):
    """The message holds no readable report (too big, broken archive, nothing attached)."""


@dataclass(frozen=True)
class ReportFile:
    name: str
    data: bytes

    @property
    def kind(self) -> str:
        """``dmarc`` (XML), ``tls`` (JSON) or ``unknown``, by the first byte that is not blank."""
        head = self.data.lstrip()[:1]
        return {b"<": "dmarc", b"{": "tls"}.get(head, "unknown")


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_TOTAL_BYTES

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise UnpackError(f"reports in one message exceed {MAX_TOTAL_BYTES} bytes decompressed")


def gunzip(data: bytes, limit: int = MAX_FILE_BYTES) -> bytes:
    """One gzip member, refusing more than ``limit`` bytes of output."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UnpackError(f"bad gzip data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise UnpackError(f"gzip file decompresses to more than {limit} bytes")
    if not inflater.eof:
        raise UnpackError("gzip file is truncated")
    return out


def unzip(data: bytes, budget: _Budget, limit: int = MAX_FILE_BYTES) -> list[ReportFile]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UnpackError(f"bad zip file: {exc}") from None
    entries = [i for i in archive.infolist() if not i.is_dir()]
    if len(entries) > MAX_ZIP_ENTRIES:
        raise UnpackError(f"zip file has {len(entries)} entries, more than {MAX_ZIP_ENTRIES}")
    out = []
    for info in entries:
        try:
            with archive.open(info) as member:
                content = member.read(limit + 1)  # streams: at most limit+1 bytes are ever inflated
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, zlib.error, EOFError) as exc:
            raise UnpackError(f"bad zip entry {info.filename!r}: {exc}") from None
        if len(content) > limit:
            raise UnpackError(f"zip entry {info.filename!r} decompresses to more than {limit} bytes")
        budget.take(len(content))
        out.append(ReportFile(info.filename, content))
    return out


def _part_files(part: EmailMessage, budget: _Budget) -> list[ReportFile]:
    ctype = part.get_content_type()
    name = (part.get_filename() or "").lower()
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return []
    if ctype in ZIP_TYPES or name.endswith(".zip"):
        return unzip(payload, budget)
    if ctype in GZIP_TYPES or name.endswith((".gz", ".gzip")):
        content = gunzip(payload)
        budget.take(len(content))
        return [ReportFile(name, content)]
    if ctype in PLAIN_TYPES or name.endswith((".xml", ".json")):
        budget.take(len(payload))
        return [ReportFile(name, payload)]
    if ctype == "application/octet-stream" and payload[:2] == b"\x1f\x8b":  # gzip without a type
        content = gunzip(payload)
        budget.take(len(content))
        return [ReportFile(name, content)]
    if ctype == "application/octet-stream" and payload[:4] == b"PK\x03\x04":
        return unzip(payload, budget)
    return []


def report_files(raw: bytes) -> list[ReportFile]:
    """The report files of a message (parts that are not reports are skipped). Raises UnpackError."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    budget = _Budget()
    files: list[ReportFile] = []
    for n, part in enumerate(msg.walk()):
        if n > MAX_PARTS:
            raise UnpackError(f"message has more than {MAX_PARTS} parts")
        if part.is_multipart():
            continue
        files.extend(_part_files(part, budget))  # type: ignore[arg-type]
    if not files:
        raise UnpackError("no report attached (expected a gzip, zip, XML or JSON report)")
    return files
