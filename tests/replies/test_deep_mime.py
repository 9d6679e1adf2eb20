"""Hostile nesting: a reply whose MIME nests 1,000 levels (multipart or message/rfc822), handed over by
delivery like any other, is stored, emitted and classified from what lies within the depth bound; a
delivery report within the bound still makes a bounce and suppresses its recipient."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dovetail.replies.pipeline import ReplyRecord
from dovetail.replies.schema import events
from dovetail.replies.service import RepliesService
from dovetail.replies.sources.local import LocalHook

HEAD = (b"From: Mail Delivery System <MAILER-DAEMON@mx.client.example>\r\nTo: bounces@acme.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n")
REPORT = (
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n"
    b"--R\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
    b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.example\r\n\r\n"
    b"Final-Recipient: rfc822; anna@client.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <anna@client.example>: Recipient address rejected\r\n\r\n"
    b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <a@acme.example>\r\n"
    b"To: anna@client.example\r\nSubject: Quick question\r\n\r\n--R--\r\n")
TEXT = b"Content-Type: text/plain\r\n\r\nwrapped\r\n"


def in_multiparts(part: bytes, levels: int) -> bytes:
    for i in range(levels):
        b = f"L{i}".encode()
        part = (b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n" + part
                + b"\r\n--" + b + b"--\r\n")
    return part


def in_messages(part: bytes, levels: int) -> bytes:
    for _ in range(levels):
        part = b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n" + part
    return part


def side_by_side(*parts: bytes) -> bytes:
    body = b"".join(b"--S\r\n" + p + b"\r\n" for p in parts)
    return b"Content-Type: multipart/mixed; boundary=\"S\"\r\n\r\n" + body + b"--S--\r\n"


def hand_over(service: RepliesService, tmp_path: Path, name: str, raw: bytes) -> ReplyRecord:
    """Deliver ``raw`` into a reply inbox's Maildir and let the delivery hook hand it to the pipeline."""
    hook = LocalHook(service, cache_ttl=0)
    hook.mark("acme", "bounces@acme.example")
    maildir = tmp_path / "mail" / "acme" / "acme.example" / "bounces"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / name).write_bytes(raw)
    rec = hook.on_delivered("acme", "bounces@acme.example", maildir, name)
    assert rec is not None and not rec.duplicate
    return rec


def emitted(engine: Engine, rec: ReplyRecord) -> dict:
    """The webhook event the reply fired (exactly one)."""
    assert len(rec.events) == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(events.c.type, events.c.payload).where(events.c.id == rec.events[0])).one()
    return {"type": row.type, **json.loads(row.payload)}


def test_a_bounce_within_the_bound_is_recognised_beside_deep_nesting(
        service: RepliesService, engine: Engine, tmp_path: Path) -> None:
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                       recipient="anna@client.example")
    raw = HEAD + b"Message-ID: <deep1@mx>\r\n" + side_by_side(in_multiparts(REPORT, 3), in_multiparts(TEXT, 1000))
    rec = hand_over(service, tmp_path, "1.M1.host", raw)
    assert (rec.kind, rec.bounce_type, rec.match_method) == ("bounce", "hard", "report")
    assert rec.details["mime_depth_limited"] is True
    assert service.queries.is_suppressed("acme", "anna@client.example")
    event = emitted(engine, rec)
    assert event["type"] == "bounce.hard"
    assert event["data"]["reply"]["details"]["mime_depth_limited"] is True


def test_a_bounce_beyond_the_bound_is_a_flagged_reply(
        service: RepliesService, engine: Engine, tmp_path: Path) -> None:
    # Forwarded by a person (no bounce in its headers), the report 1,000 levels down is out of reach.
    raw = (b"From: anna@client.example\r\nTo: bounces@acme.example\r\nSubject: Fwd: this came back\r\n"
           b"Message-ID: <deep2@mx>\r\n" + in_multiparts(REPORT, 1000))
    rec = hand_over(service, tmp_path, "2.M2.host", raw)
    assert (rec.kind, rec.details) == ("human", {"mime_depth_limited": True})
    assert not service.queries.is_suppressed("acme", "anna@client.example")
    event = emitted(engine, rec)
    assert event["data"]["reply"]["message_id"] == "deep2@mx"
    assert event["data"]["reply"]["details"] == {"mime_depth_limited": True}


def test_a_thousand_nested_messages_are_stored_and_emitted(
        service: RepliesService, engine: Engine, tmp_path: Path) -> None:
    raw = (b"From: anna@client.example\r\nTo: bounces@acme.example\r\nSubject: Re: Quick question\r\n"
           b"Message-ID: <deep3@client.example>\r\n" + in_messages(TEXT, 1000))
    rec = hand_over(service, tmp_path, "3.M3.host", raw)
    assert rec.subject == "Re: Quick question" and rec.details.get("mime_depth_limited") is True
    event = emitted(engine, rec)
    assert event["data"]["reply"]["from"] == "anna@client.example"
    assert event["data"]["reply"]["details"]["mime_depth_limited"] is True
