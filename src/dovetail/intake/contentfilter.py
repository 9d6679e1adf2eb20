"""Content filtering at the end of DATA: milters and rspamd decide before the MX answers ``250``.

``FilteringWriter`` sits between the MX's sinks (sender authentication) and the queue writer: it
holds what they write, and at commit asks each milter in turn, then rspamd, and applies the
verdicts before a byte is queued. A refusal travels up as ``ContentRefusal`` and ``FilteredSink``
turns it into the SMTP reply; a discard is answered ``250`` like an accepted message and dropped.

Verdicts:

- milter ``reject``/``replycode 5xx`` → ``550 5.7.1`` with the filter's text; ``tempfail``/``4xx``
  → ``451 4.7.1``; ``discard`` → ``250``, nothing queued (logged); header edits are applied to the
  stored message; ``quarantine`` sends every recipient's copy to its Junk folder (the queue's
  ``hold/`` is an operator's tool, and a held message is seen by nobody until an operator
  releases it; Junk puts it where its recipient can judge it).
- rspamd: ``X-Spam-Flag``/``X-Spam-Score``/``X-Spam-Status`` headers (incoming ones are removed
  first, so these are always ours) and a ``spam=`` entry in our Authentication-Results; per
  recipient, the tenant's thresholds (or rspamd's action when the tenant has none) choose
  reject, greylist (``451``), rewrite-subject, add-header (Junk folder) or nothing. A refusal needs
  every recipient to want it; otherwise the ones that wanted more than a header get Junk.
- a filter that cannot be asked (down, slow, closing early, answering garbage) gets
  ``mx.milter_default_action`` / ``mx.rspamd_default_action``: ``tempfail`` (``451 4.7.1``) by
  default, ``reject`` or ``accept`` if configured; it is logged either way.

Messages larger than ``hold_bytes`` are not filtered (logged and counted as ``content_unfiltered``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..log import get_logger
from ..mailauth.headers import rename_ours, split_message
from ..smtp.backend import MessageSink, SessionInfo
from ..smtp.reply import Reply
from . import headeredit as he
from .milter.client import MessageContext, MilterSpec, MilterVerdict, Timeouts, check_message
from .rspamd import RspamdClient, RspamdEnvelope, RspamdError, RspamdResult
from .writer import IntakeWriter

log = get_logger("cleanup")

HOLD_BYTES = 16 * 1024 * 1024
SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Status")
JUNK_ACTIONS = ("reject", "add header", "rewrite subject")


@dataclass(frozen=True)
class Thresholds:
    """A tenant's spam score thresholds; None leaves that action to rspamd's own choice."""

    reject: float | None = None
    greylist: float | None = None
    rewrite_subject: float | None = None
    add_header: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.reject, self.greylist, self.rewrite_subject, self.add_header))

    def action(self, score: float, rspamd_action: str) -> str:
        if not self.any:
            return "greylist" if rspamd_action == "soft reject" else rspamd_action
        for name, limit in (("reject", self.reject), ("greylist", self.greylist),
                            ("rewrite subject", self.rewrite_subject), ("add header", self.add_header)):
            if limit is not None and score >= limit:
                return name
        return "no action"


ThresholdLookup = Callable[[str], Awaitable[Thresholds | None]]


def _fail_reply(action: str, what: str) -> Reply | None:
    if action == "reject":
        return Reply(550, "5.7.1", f"Message refused: {what} unavailable")
    if action == "tempfail":
        return Reply(451, "4.7.1", f"{what} temporarily unavailable, try again later")
    return None


@dataclass
class ContentFilter:
    """The MX's filters, from the ``mx.milter*`` and ``mx.rspamd*`` config keys."""

    hostname: str
    authserv_id: str
    milters: list[MilterSpec] = field(default_factory=list)
    milter_default_action: str = "tempfail"
    timeouts: Timeouts = field(default_factory=Timeouts)
    rspamd: RspamdClient | None = None
    rspamd_default_action: str = "tempfail"
    thresholds: ThresholdLookup | None = None
    hold_bytes: int = HOLD_BYTES

    @property
    def active(self) -> bool:
        return bool(self.milters) or self.rspamd is not None


class ContentRefusal(Exception):
    """The message is not to be queued; ``reply`` is what the client hears (``discard``: a 250)."""

    def __init__(self, reply: Reply, discard: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.discard = discard


class _Outcome:
    def __init__(self) -> None:
        self.junk: set[int] = set()  # positions in the envelope's recipient list bound for Junk
        self.notes: list[str] = []


class FilteringWriter:
    """An ``IntakeWriter`` that filters what it is given before handing it to the queue writer."""

    def __init__(self, inner: IntakeWriter, cf: ContentFilter, session: SessionInfo,
                 record: Callable[[str], None], results_on_top: bool = False) -> None:
        self.inner = inner
        self.results_on_top = results_on_top  # sender authentication wrote our A-R as the first field
        self.queue_id = inner.queue_id
        self.envelope = inner.envelope
        self.cf = cf
        self.session = session
        self.record = record
        self._held: list[bytes] = []
        self._size = 0
        self._passing = False

    def annotate(self, extra: dict[str, str]) -> None:
        self.inner.annotate(extra)

    async def awrite(self, data: bytes) -> None:
        if self._passing:
            await self.inner.awrite(data)
            return
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size > self.cf.hold_bytes:
            self._passing = True
            self.record("content_unfiltered")
            log.warning(f"message larger than {self.cf.hold_bytes} bytes: not content filtered", qid=self.queue_id)
            held, self._held = b"".join(self._held), []
            await self.inner.awrite(held)

    async def aabort(self) -> None:
        self._held = []
        await self.inner.aabort()

    async def acommit(self) -> str:
        if not self._passing:
            message, self._held = b"".join(self._held), []
            message = await self._filter(message)
            await self.inner.awrite(message)
        return await self.inner.acommit()

    def _recipients(self) -> list[str]:
        return [r.address for r in self.envelope.recipients]

    async def _filter(self, message: bytes) -> bytes:
        head, body = split_message(message)
        eol = he.eol_of(head)
        fields = he.split_fields(head)
        outcome = _Outcome()
        removed = he.remove(fields, SPAM_HEADERS)
        if removed:
            log.info(f"removed {removed} incoming X-Spam header(s)", qid=self.queue_id)
        started = time.monotonic()
        for spec in self.cf.milters:
            verdict = await check_message(spec, self._context(b"".join(fields) + body), self.cf.timeouts)
            self._apply_milter(spec, verdict, fields, eol, outcome)
        if self.cf.rspamd is not None:
            await self._rspamd(fields, body, eol, outcome)
        if outcome.junk:
            self._junk(outcome.junk)
        log.info(f"content filter: {', '.join(outcome.notes) or 'no filter ran'}, "
                 f"{1000 * (time.monotonic() - started):.0f} ms", qid=self.queue_id)
        return b"".join(fields) + body

    def _context(self, message: bytes) -> MessageContext:
        s = self.session
        return MessageContext(client_ip=s.client_ip, client_port=s.client_port, client_name=s.client_name,
                              helo=s.helo or "", sender=self.envelope.sender, recipients=self._recipients(),
                              queue_id=self.queue_id, hostname=self.cf.hostname, message=message)

    def _apply_milter(self, spec: MilterSpec, verdict: MilterVerdict, fields: list[bytes], eol: bytes,
                      outcome: _Outcome) -> None:
        if verdict.action == "error":
            self.record("milter_error")
            action = self.cf.milter_default_action
            log.warning(f"milter {spec.name}: {verdict.reason}; default action {action}", qid=self.queue_id)
            reply = _fail_reply(action, "Content filter")
            if reply is not None:
                raise ContentRefusal(reply)
            outcome.notes.append(f"milter {spec.name} failed, accepted")
            return
        if verdict.action in ("reject", "tempfail"):
            self.record(f"milter_{verdict.action}")
            log.info(f"milter {spec.name}: {verdict.action} {verdict.code} {verdict.status} {verdict.text}",
                     qid=self.queue_id)
            raise ContentRefusal(Reply(verdict.code, verdict.status, verdict.text))
        if verdict.action == "discard":
            self.record("milter_discard")
            log.info(f"milter {spec.name}: discard", qid=self.queue_id)
            raise ContentRefusal(Reply(250, "2.0.0", f"Ok: queued as {self.queue_id}"), discard=True)
        for edit in verdict.edits:
            if edit.op == "add":
                he.add(fields, edit.name, edit.value, eol)
            elif edit.op == "insert":
                he.insert(fields, edit.index, edit.name, edit.value, eol)
            else:
                he.change(fields, edit.index, edit.name, edit.value, eol)
        if verdict.quarantine:
            self.record("milter_quarantine")
            outcome.junk |= set(range(len(self.envelope.recipients)))
            log.info(f"milter {spec.name}: quarantine ({verdict.quarantine}): to Junk", qid=self.queue_id)
        outcome.notes.append(f"milter {spec.name} {verdict.action}"
                             + (f" {len(verdict.edits)} header edit(s)" if verdict.edits else "")
                             + (" quarantine" if verdict.quarantine else ""))

    async def _rspamd(self, fields: list[bytes], body: bytes, eol: bytes, outcome: _Outcome) -> None:
        assert self.cf.rspamd is not None
        s = self.session
        env = RspamdEnvelope(client_ip=s.client_ip, helo=s.helo or "", sender=self.envelope.sender,
                             recipients=self._recipients(), queue_id=self.queue_id, client_name=s.client_name,
                             user=s.auth_user)
        try:
            result = await self.cf.rspamd.check(b"".join(fields) + body, env)
        except RspamdError as exc:
            self.record("rspamd_error")
            action = self.cf.rspamd_default_action
            log.warning(f"rspamd: {exc}; default action {action}", qid=self.queue_id)
            reply = _fail_reply(action, "Spam filter")
            if reply is not None:
                raise ContentRefusal(reply) from None
            outcome.notes.append("rspamd failed, accepted")
            return
        actions = [await self._action(rcpt, result) for rcpt in self._recipients()]
        summary = (f"rspamd score={result.score:.2f} required={result.required:.2f} action={result.action}"
                   f" applied={'/'.join(sorted(set(actions)))}")
        outcome.notes.append(summary)
        if actions and all(a == "reject" for a in actions):
            self.record("spam_reject")
            raise ContentRefusal(Reply(550, "5.7.1", result.smtp_message or "Spam message rejected"))
        if actions and all(a in ("reject", "greylist") for a in actions):
            self.record("spam_greylist")
            raise ContentRefusal(Reply(451, "4.7.1", "Try again later"))
        spam = any(a in JUNK_ACTIONS for a in actions)
        if spam:
            self.record("spam_junk")
            outcome.junk |= {i for i, a in enumerate(actions) if a in JUNK_ACTIONS}
        if "rewrite subject" in actions:
            self._rewrite_subject(fields, result, eol)
        self._spam_headers(fields, result, spam, eol)

    async def _action(self, rcpt: str, result: RspamdResult) -> str:
        thresholds = await self.cf.thresholds(rcpt) if self.cf.thresholds is not None else None
        return (thresholds or Thresholds()).action(result.score, result.action)

    def _rewrite_subject(self, fields: list[bytes], result: RspamdResult, eol: bytes) -> None:
        old = next((f for f in fields if he.field_name(f) == "subject"), None)
        text = old.split(b":", 1)[1].strip().decode("utf-8", "surrogateescape") if old else ""
        new = result.subject or f"*** SPAM *** {text}".rstrip()
        he.change(fields, 1, "Subject", " ".join(new.split()), eol)

    def _spam_headers(self, fields: list[bytes], result: RspamdResult, spam: bool, eol: bytes) -> None:
        top = [f"X-Spam-Flag: {'YES' if spam else 'NO'}",
               f"X-Spam-Score: {result.score:.2f}",
               f"X-Spam-Status: {'Yes' if spam else 'No'}, score={result.score:.2f} required={result.required:.2f}"
               f" action={result.action.replace(' ', '_')}"]
        action = result.action.replace(" ", "_")
        entry = f"spam={'yes' if spam else 'no'} (rspamd score={result.score:.2f} action={action})"
        self._add_results_entry(fields, entry, eol)
        fields[0:0] = [line.encode() + eol for line in top]

    def _add_results_entry(self, fields: list[bytes], entry: str, eol: bytes) -> None:
        """Our Authentication-Results (sender authentication put it first) gains the ``spam`` entry;
        without one, a header of our own carries it, and any incoming one naming our authserv-id is
        renamed first (sender authentication, when on, has done that already)."""
        if self.results_on_top and fields and he.field_name(fields[0]) == "authentication-results":
            fields[0] = fields[0].rstrip(b"\r\n") + b";" + eol + b"\t" + entry.encode() + eol
            return
        head, renamed = rename_ours(b"".join(fields), self.cf.authserv_id)
        if renamed:
            fields[:] = he.split_fields(head)
            log.info(f"renamed {renamed} Authentication-Results header(s) naming {self.cf.authserv_id}",
                     qid=self.queue_id)
        fields.insert(0, f"Authentication-Results: {self.cf.authserv_id};".encode() + eol
                      + b"\t" + entry.encode() + eol)

    def _junk(self, positions: set[int]) -> None:
        marked = {m for m in (self.inner.envelope.extra.get("junk") or "").split(",") if m}
        marked |= {str(r.index) for i, r in enumerate(self.envelope.recipients) if i in positions}
        self.inner.annotate({"junk": ",".join(sorted(marked, key=int))})


class FilteredSink:
    """The outermost sink: turns a filter's refusal into the reply to the client."""

    def __init__(self, inner: MessageSink, writer: FilteringWriter, record: Callable[[str], None]) -> None:
        self.inner = inner
        self.queue_id = inner.queue_id
        self.writer = writer
        self.record = record

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def commit(self) -> Reply:
        try:
            return await self.inner.commit()
        except ContentRefusal as refusal:
            await self.inner.abort()
            if refusal.discard:
                log.info("discarded by content filter", qid=self.queue_id)
            else:
                self.record("rejected")
            return refusal.reply

    async def abort(self) -> None:
        await self.inner.abort()
