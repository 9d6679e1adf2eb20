"""Virtual mailbox delivery into Maildir (Postfix's virtual(8)).

For each recipient the resolver names the mailboxes (``MailboxTarget``). Each mailbox gets its own
copy of the message with ``Return-Path:`` and ``Delivered-To:`` prepended and LF line endings.
Copies are never hard-linked across mailboxes: ``Delivered-To:`` differs per mailbox and is what
loop detection relies on, so like Postfix's virtual we write one file per mailbox. A message of up to
``READ_ONCE_BYTES`` is read and converted to LF once; each copy is then its two header lines and
those same bytes, written with one ``writev``. The copies of one message are made durable together
(:func:`dovetail.storage.deliveries_together`): every copy written, flushed and linked, then the
folders synced, so the folder syncs share one journal commit instead of waiting for one each. Two recipients
of one message that resolve to the same Maildir get one copy.

A recipient that resolves to several mailboxes is retried as a whole when one of them fails
temporarily; the storage names each copy after the queue id and recipient index, so a retry finds
the copies that succeeded instead of writing them again. Quota is checked for every mailbox of a
recipient before any copy is written.

The message may be a queue file or a message an LMTP session holds (anything :class:`Deliverable`), so
lmtpd delivers with the same rules as the queue does.

The files themselves are the storage's business (:meth:`dovetail.storage.api.MailStorage.deliver`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from dovetail.delivery.loops import scan_headers
from dovetail.log import get_logger
from dovetail.queue.agent import DeliveryResult
from dovetail.queue.envelope import Envelope, QueueRecipient
from dovetail.storage import MailStorage, deliveries_together, open_storage
from dovetail.storage.api import Delivered, DeliveryId, MailboxNotFound, OverQuota

log = get_logger("virtual")

RELAY = "virtual"
READ_ONCE_BYTES = 256 * 1024  # a message up to this size is read and LF-converted once (the MX holds as much)
_CTL = re.compile(r"[\x00-\x1f\x7f]")


class Deliverable(Protocol):
    """What the agent reads of a message: a queue file (``QueuedMessage``) or one held by an LMTP session."""

    queue_id: str
    envelope: Envelope
    size: int

    def open(self) -> BinaryIO: ...

    def read_headers(self, limit: int = ...) -> bytes: ...


@dataclass(frozen=True)
class MailboxTarget:
    """One mailbox a recipient's mail goes to; ``detail`` is the +tag of the address, if any."""

    address: str
    maildir: Path
    quota_bytes: int | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Rejection:
    """The resolver's answer for an address that has no mailbox."""

    reason: str = "user unknown"
    dsn_code: str = "5.1.1"


class RecipientRejected(Exception):
    """A resolver may raise this instead of returning ``Rejection``."""

    def __init__(self, reason: str = "user unknown", dsn_code: str = "5.1.1") -> None:
        super().__init__(reason)
        self.rejection = Rejection(reason, dsn_code)


Resolver = Callable[[str], "list[MailboxTarget] | Rejection"]


@dataclass
class MaildirConfig:
    hop_count_limit: int = 50
    quota_bounce: bool = False
    header_limit: int = 1024 * 1024


class MaildirDeliveryAgent:
    """``deliver`` runs the blocking file work in a worker thread, one thread per call."""

    def __init__(self, resolve: Resolver, config: MaildirConfig | None = None) -> None:
        self.resolve = resolve
        self.config = config or MaildirConfig()

    async def deliver(self, message: Deliverable, recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        return await asyncio.to_thread(self.deliver_sync, message, recipients)

    def deliver_sync(self, message: Deliverable, recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        facts = scan_headers(message.read_headers(self.config.header_limit))
        if facts.received > self.config.hop_count_limit:
            reason = f"mail forwarding loop: too many hops ({facts.received} Received: headers)"
            return [DeliveryResult(r, "bounced", "5.4.6", reason, RELAY) for r in recipients]
        done: dict[object, DeliveryResult | None] = {}
        many = len(recipients) > 1
        body = _lf_body(message) if message.size <= READ_ONCE_BYTES else None
        if not many:
            return [self._one(message, rcpt, facts.delivered_to, done, many, body) for rcpt in recipients]
        results: list[DeliveryResult] = []
        try:
            with deliveries_together():  # the copies' folders synced once all are linked
                results = [self._one(message, rcpt, facts.delivered_to, done, many, body) for rcpt in recipients]
        except OSError as exc:  # a folder sync failed: no copy of this message may be reported stored
            if not results:
                raise
            code, reason = _io_error(exc)
            return [DeliveryResult(r.recipient, "deferred", code, reason, RELAY) if r.status == "sent" else r
                    for r in results]
        return results

    def _one(
        self,
        message: Deliverable,
        rcpt: QueueRecipient,
        seen: frozenset[str],
        done: dict[object, DeliveryResult | None],
        many: bool = True,
        body: bytes | None = None,
    ) -> DeliveryResult:
        try:
            resolved = self.resolve(rcpt.address)
        except RecipientRejected as exc:
            resolved = exc.rejection
        except Exception as exc:
            return DeliveryResult(rcpt, "deferred", "4.3.0", f"mailbox lookup failed: {exc}", RELAY)
        if isinstance(resolved, Rejection):
            if resolved.dsn_code.startswith("4"):  # 4.x.x: the queue tries again later
                return DeliveryResult(rcpt, "deferred", resolved.dsn_code, resolved.reason, RELAY)
            return DeliveryResult(rcpt, "bounced", resolved.dsn_code, resolved.reason, RELAY)
        if not resolved:
            return DeliveryResult(rcpt, "bounced", "5.1.1", "user unknown", RELAY)
        for target in resolved:
            if rcpt.address.lower() in seen or target.address.lower() in seen:
                reason = f"mail forwarding loop for {target.address}"
                return DeliveryResult(rcpt, "bounced", "5.4.6", reason, RELAY)
        stores = [(target, open_storage(target.maildir, create=False)) for target in resolved]
        for target, store in stores:
            full = self._over_quota(message, target, store)
            if full is not None:
                return DeliveryResult(rcpt, full[0], full[1], full[2], RELAY)
        delivery = DeliveryId(message.queue_id, rcpt.index, message.envelope.arrival)
        retry = bool(message.envelope.attempts)  # a reader may have moved an earlier copy to cur/
        mailbox = "Junk" if _junk(message, rcpt) else "INBOX"
        for target, store in stores:
            # Two targets may name one Maildir by different paths; with a single target there is
            # nothing to compare.
            compare = many or len(resolved) > 1
            key = _folder_key(target.maildir) if compare else target.maildir
            if key in done:
                continue
            try:
                stored = self._store(store, message, target, delivery, retry, mailbox, body)
            except OSError as exc:
                return DeliveryResult(rcpt, "deferred", *_io_error(exc), RELAY)
            if stored.duplicate:
                log.info(f"already delivered to {stored.key}, not writing it again", qid=message.queue_id)
            done[key] = None
            if compare and isinstance(key, Path):  # the delivery made the Maildir: its inode names it from now on
                done[_folder_key(target.maildir)] = None
        return DeliveryResult(rcpt, "sent", "2.0.0", "delivered to maildir", RELAY)

    def _store(self, store: MailStorage, message: Deliverable, target: MailboxTarget, delivery: DeliveryId,
               retry: bool, mailbox: str, body: bytes | None = None) -> Delivered:
        address = target.address
        if mailbox == "INBOX":
            return store.deliver(self._content(message, address, body), delivery_id=delivery, retry=retry)
        try:
            return store.deliver(self._content(message, address, body), mailbox=mailbox, delivery_id=delivery,
                                 retry=retry)
        except (MailboxNotFound, FileNotFoundError):  # never logged in to: make its special-use folders now
            open_storage(target.maildir, create=True).ensure_special_use()
            return store.deliver(self._content(message, address, body), mailbox=mailbox, delivery_id=delivery,
                                 retry=retry)

    def _over_quota(
        self, message: Deliverable, target: MailboxTarget, store: MailStorage
    ) -> tuple[Literal["bounced", "deferred"], str, str] | None:
        try:
            store.check_quota(target.quota_bytes, message.size)
        except OverQuota as exc:
            return ("bounced", "5.2.2", str(exc)) if self.config.quota_bounce else ("deferred", "4.2.2", str(exc))
        return None

    @staticmethod
    def _content(message: Deliverable, address: str, body: bytes | None = None) -> Iterator[bytes]:
        """The copy for one mailbox: its own two header lines, then the message (``body``: already read
        and LF-converted once for all copies; else streamed from the message)."""
        sender = _CTL.sub("", message.envelope.sender)
        yield f"Return-Path: <{sender}>\nDelivered-To: {_CTL.sub('', address)}\n".encode()
        if body is not None:
            yield body
            return
        with message.open() as stream:
            yield from iter(lambda: stream.read(65536), b"")


def _lf_body(message: Deliverable) -> bytes:
    """The whole message with LF line endings (bare CRs kept), read once: each mailbox's copy differs
    only in its first two lines, so the conversion is not repeated per copy."""
    with message.open() as stream:
        return stream.read().replace(b"\r\n", b"\n")


def _folder_key(maildir: Path) -> object:
    """What tells two Maildir paths apart: the directory's device and inode (one ``stat``, where
    ``Path.resolve`` takes an ``lstat`` per path component), or the resolved path while it does not exist."""
    try:
        st = os.stat(maildir)
    except OSError:
        return maildir.resolve()
    return (st.st_dev, st.st_ino)


def _junk(message: Deliverable, rcpt: QueueRecipient) -> bool:
    """Whether the MX marked this recipient's copy for the Junk folder (a sender's DMARC quarantine)."""
    marked = message.envelope.extra.get("junk") or ""
    return str(rcpt.index) in marked.split(",")


def _io_error(exc: OSError) -> tuple[str, str]:
    if exc.errno == errno.ENOSPC:
        return "4.3.1", f"mail system full: cannot write maildir: {exc.strerror}"
    if exc.errno == errno.EDQUOT:
        return "4.2.2", f"mailbox over disk quota: {exc.strerror}"
    return "4.3.0", f"cannot write maildir: {exc.strerror or exc}"
