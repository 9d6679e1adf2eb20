"""Mail our MX's content filter flagged as spam is no human reply: a ``reply.spam`` event or none, per tenant."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dovetail.directory import Directory
from dovetail.replies.pipeline import Source
from dovetail.replies.schema import events, replies
from dovetail.replies.service import RepliesService
from dovetail.sealing import Sealer

from .mails import reply

OURS = "mx.ours.test"


@pytest.fixture
def ours(engine: Engine, secret: bytes) -> RepliesService:
    return RepliesService(engine, secret, allow_private_webhooks=True, sealer=Sealer(os.urandom(32)),
                          authserv_id=OURS)


def _flagged(authserv: str = OURS, verdict: str = "yes", n: int = 1) -> bytes:
    return reply(message_id=f"<s{n}@client.example>", body="Cheap watches, click here.\n",
                 extra=f"Authentication-Results: {authserv}; spf=pass smtp.mailfrom=client.example;\r\n"
                       f"\tspam={verdict} (rspamd score=9.00 action=add_header)")


def _event_types(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r.type for r in conn.execute(sa.select(events.c.type).order_by(events.c.id))]


def test_flagged_message_fires_reply_spam_not_a_reply_event(ours: RepliesService, engine: Engine) -> None:
    rec = ours.process_message(_flagged(), Source("acme", "local:replies@acme.example", item="1", folder="Junk"))
    assert rec.event_type == "reply.spam" and len(rec.events) == 1
    assert _event_types(engine) == ["reply.spam"]
    with engine.connect() as conn:
        details = json.loads(conn.execute(sa.select(replies.c.details).where(replies.c.id == rec.id)).scalar_one())
    assert details["spam"] is True and details["folder"] == "Junk"
    row = ours.queries.replies("acme", thread_id=rec.thread_id)[0]
    assert row["details"]["folder"] == "Junk"  # what the thread view shows


def test_ham_and_other_servers_verdicts_stay_replies(ours: RepliesService, engine: Engine) -> None:
    ham = ours.process_message(_flagged(verdict="no", n=2), Source("acme", "local:r@acme.example", item="2"))
    forged = ours.process_message(_flagged(authserv="mx.elsewhere.example", n=3),
                                  Source("acme", "local:r@acme.example", item="3"))
    assert ham.event_type == forged.event_type == "reply.unmatched"


def test_tenant_that_drops_spam_gets_no_event(ours: RepliesService, engine: Engine) -> None:
    Directory(engine).tenant_set("acme", reply_spam="drop")
    rec = ours.process_message(_flagged(n=4), Source("acme", "local:r@acme.example", item="4"))
    assert rec.events == [] and rec.id and _event_types(engine) == []
    assert ours.queries.reply("acme", rec.id) is not None  # stored, visible in its thread
    Directory(engine).tenant_set("other", reply_spam="event")
    with pytest.raises(Exception, match="not one of event, drop"):
        Directory(engine).tenant_set("acme", reply_spam="bin")
