"""Local recipients committed straight into their Maildirs at the MX, as an LMTP server commits them.

When every recipient of a message is a mailbox on this node, the MX delivers it itself before its
``250``: each copy is written, fsynced and linked into the Maildir with its directory fsynced, and the
replies hand-over is committed, through the same step lmtpd uses (:mod:`.localcommit`). No queue file
is written and the queue manager never sees the message, which saves a file, two fsyncs, a rename and
the hop to another process per message.

A message takes the queue as before when a recipient needs it: an alias that forwards outside our
domains, a mailbox homed on another node or routed by an ``lmtp`` transport rule, a recipient that
asked for a success DSN (the queue manager sends those), or a message too large to be held in memory.
A recipient the direct attempt could not deliver (over quota at the message's real size, a disk
error, a loop) goes to the queue too, in a queue file committed before the ``250`` that records the
recipients already delivered as ``sent``: the queue manager then does exactly what it would have done
with the message (defer and retry, or bounce with a DSN), so the outcome does not depend on the path.

The log tells the same story as the queued path, keyed by the queue id the ``Received:`` header
carries: the client line, one ``dovetail/virtual: QUEUEID: to=<...>, relay=virtual, ..., status=sent
(delivered to maildir)`` line per recipient (written by smtpd, where the queue manager writes it as
``dovetail/qmgr``), the listener's ``from=<...>, nrcpt=...`` line and ``removed``.

Crash safety: a message answered ``250`` has every copy on stable storage (or, for the rest, its queue
file). Copies are named after the queue id and recipient index, so a message cannot be written twice
under one id; a crash before the ``250`` leaves what SMTP always leaves then, a message the client will
send again (it may then be delivered twice, as with a queued message whose ``250`` was lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..directory import Resolution
from ..log import get_logger
from ..queue import QueueRecipient, QueueWriter
from ..queue.agent import DeliveryResult
from .localcommit import HeldMessage, LocalAgent, deliver_held

log = get_logger("smtpd")
vlog = get_logger("virtual")


class DirectDelivery:
    """Which messages the MX delivers itself, and the agent it delivers them with.

    ``lmtp_rule(address)`` says whether an ``lmtp`` transport rule routes the address (a cached table
    that reads the database at most once per ``check_interval``: that read is made in a thread);
    ``here`` is ``node.name`` (mailboxes homed on another node go through the queue to it over LMTP).
    """

    def __init__(self, agent: LocalAgent, *, here: str = "", lmtp_rule: Callable[[str], object | None] | None = None,
                 check_interval: float = 1.0) -> None:
        self.agent = agent
        self.here = here.strip().lower()
        self.lmtp_rule = lmtp_rule
        self.check_interval = check_interval
        self._rules_read = float("-inf")

    def local(self, res: Resolution) -> bool:
        """Whether the address resolves only to mailboxes delivered on this node."""
        if not res.ok or not res.mailboxes or res.external:
            return False
        return not (self.here and any(m.node and m.node != self.here for m in res.mailboxes))

    async def routed_elsewhere(self, address: str) -> bool:
        """Whether an lmtp transport rule takes the address (the queue manager would hand it to LMTP)."""
        if self.lmtp_rule is None:
            return False
        now = time.monotonic()
        if now - self._rules_read >= self.check_interval:
            self._rules_read = now
            return await asyncio.to_thread(self.lmtp_rule, address) is not None
        return self.lmtp_rule(address) is not None


def _sent_record(results: list[DeliveryResult]) -> dict[str, Any]:
    """The queue manager's status record for recipients delivered at intake."""
    now = time.time()
    return {"r": {str(r.recipient.index): {"c": r.dsn_code, "w": r.reason, "t": now, "y": r.relay, "s": "sent"}
                  for r in results}}


class DirectWriter:
    """An intake writer that delivers the message at commit instead of queueing it (when it can)."""

    def __init__(self, inner: QueueWriter, agent: LocalAgent) -> None:
        self.inner = inner
        self.agent = agent
        self.queue_id = inner.queue_id
        self.envelope = inner.envelope

    def annotate(self, extra: dict[str, str]) -> None:
        self.inner.annotate(extra)

    async def awrite(self, data: bytes) -> None:
        await self.inner.awrite(data)

    async def aabort(self) -> None:
        await self.inner.aabort()

    async def acommit(self) -> str:
        inner = self.inner
        if not inner.in_memory:  # a large message streamed to its queue file: the queue delivers it
            return await inner.acommit()
        env = self.envelope
        message = HeldMessage(self.queue_id, env, data=inner.held())
        results = await deliver_held(self.agent, message)
        sent = [r for r in results if r.status == "sent"]
        for res in sent:
            _log_sent(self.queue_id, env.arrival, res)
        if len(sent) == len(results):
            await inner.aabort()  # nothing of it was on disk: this only forgets the bytes
            # After the listener's own line for the accepted message, which follows this return at once:
            # "removed" ends a message's story, as the queue manager's does.
            asyncio.get_running_loop().call_soon(_log_removed, self.queue_id)
            return self.queue_id
        if sent:
            inner.record(_sent_record(sent))
        left = [r for r in results if r.status != "sent"]
        log.info(f"{len(left)} recipient(s) to the queue: {left[0].dsn_code} {left[0].reason}", qid=self.queue_id)
        return await inner.acommit()


def _log_removed(qid: str) -> None:
    log.info("removed", qid=qid)


def _log_sent(qid: str, arrival: float, res: DeliveryResult) -> None:
    rcpt: QueueRecipient = res.recipient
    orig = f", orig_to=<{rcpt.original}>" if rcpt.original and rcpt.original != rcpt.address else ""
    delay = max(0.0, time.time() - arrival)
    vlog.info(f"to=<{rcpt.address}>{orig}, relay={res.relay or 'virtual'}, delay={delay:.2f}, dsn={res.dsn_code}, "
              f"status=sent ({res.reason})", qid=qid)
