"""One message through one milter: a short asyncio conversation over TCP or a Unix socket.

The MX consults filters once the whole message is in (as Postfix's non-SMTP-time milters do): one
connection per message carries connect, helo, envelope, headers, body and end of message, then quit.
A recipient or envelope refusal therefore refuses the whole message. Each step has a deadline
(``connect``, ``command``, and ``content`` for the body and end of message, as Postfix's
``milter_*_timeout``); a filter that is down, slow, closes early or answers garbage yields the
configured default action, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from ...log import get_logger
from ...mailauth.headers import split_message
from . import protocol as p

log = get_logger("milter")


@dataclass(frozen=True)
class MilterSpec:
    """``inet:host:port`` or ``unix:/path`` (Postfix's notation)."""

    name: str
    host: str = ""
    port: int = 0
    path: str = ""


def parse_milter(text: str) -> MilterSpec:
    """Parse ``inet:host:port``, ``inet:[v6]:port``, ``host:port`` or ``unix:/path``; ValueError otherwise."""
    spec = text.strip()
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path.startswith("/"):
            raise ValueError(f"milter {text!r}: unix socket needs an absolute path")
        return MilterSpec(spec, path=path)
    rest = spec[5:] if spec.startswith("inet:") else spec
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"milter {text!r}: expected inet:host:port or unix:/path")
    return MilterSpec(spec, host=host, port=int(port))


@dataclass
class MessageContext:
    """What a filter is told about the message."""

    client_ip: str
    client_port: int
    client_name: str
    helo: str
    sender: str
    recipients: list[str]
    queue_id: str
    hostname: str
    message: bytes


@dataclass
class MilterVerdict:
    """``continue`` (nothing to say), ``accept``, ``reject``, ``tempfail``, ``discard`` or ``error``."""

    action: str
    code: int = 0
    status: str = ""
    text: str = ""
    edits: list[p.HeaderEdit] = field(default_factory=list)
    quarantine: str | None = None
    reason: str = ""  # what went wrong, for ``error``


@dataclass(frozen=True)
class Timeouts:
    connect: float = 30.0
    command: float = 30.0
    content: float = 300.0


class _Done(Exception):
    def __init__(self, verdict: MilterVerdict) -> None:
        self.verdict = verdict


class _Conversation:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeouts: Timeouts) -> None:
        self.reader = reader
        self.writer = writer
        self.timeouts = timeouts
        self.decoder = p.Decoder()
        self.queued: list[tuple[bytes, bytes]] = []
        self.steps = 0
        self.actions = 0

    async def read(self, limit: float) -> p.Response:
        while not self.queued:
            data = await asyncio.wait_for(self.reader.read(65536), limit)
            if not data:
                raise p.ProtocolError("filter closed the connection")
            self.queued.extend(self.decoder.feed(data))
        return p.decode_response(*self.queued.pop(0))

    async def send(self, data: bytes, limit: float) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), limit)

    async def step(self, data: bytes, no_reply: int, limit: float) -> str:
        """Send one command; unless the filter said it will not answer, read its verdict."""
        await self.send(data, limit)
        if self.steps & no_reply:
            return "continue"
        while True:
            reply = await self.read(limit)
            if isinstance(reply, p.Simple):
                if reply.kind == "progress":
                    continue
                if reply.kind in ("continue", "skip"):
                    return reply.kind
                if reply.kind == "accept":
                    raise _Done(MilterVerdict("accept"))
                raise _Done(_refusal(reply.kind))
            if isinstance(reply, p.ReplyCode):
                raise _Done(_replycode(reply))
            raise p.ProtocolError(f"{type(reply).__name__} outside end of message")


def _refusal(kind: str) -> MilterVerdict:
    if kind == "reject":
        return MilterVerdict("reject", 550, "5.7.1", "Command rejected")
    if kind == "tempfail":
        return MilterVerdict("tempfail", 451, "4.7.1", "Service unavailable - try again later")
    return MilterVerdict("discard")


def _replycode(reply: p.ReplyCode) -> MilterVerdict:
    action = "reject" if reply.code >= 500 else "tempfail"
    return MilterVerdict(action, reply.code, reply.status, reply.text)


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            continue
        text = line.decode("utf-8", "surrogateescape")
        if text[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + text)
        elif ":" in text:
            name, _, value = text.partition(":")
            fields.append((name.strip(), value.lstrip(" \t")))
    return fields


async def _converse(conv: _Conversation, ctx: MessageContext) -> MilterVerdict:
    t = conv.timeouts
    await conv.send(p.optneg(), t.command)
    neg = await conv.read(t.command)
    if not isinstance(neg, p.Negotiated):
        raise p.ProtocolError("no option negotiation reply")
    if neg.version < 2 or neg.actions & ~p.ACTIONS_OFFERED & (p.CHGBODY | p.ADDRCPT | p.DELRCPT | p.CHGFROM):
        log.info(f"filter asks for actions {neg.actions:#x}; only header changes and quarantine are applied")
    conv.steps, conv.actions = neg.steps & p.STEPS_OFFERED, neg.actions
    s = conv.steps
    await conv.send(p.macros(p.CONNECT, {"j": ctx.hostname, "{daemon_name}": "dovetail", "_": f"{ctx.client_name} "
                                         f"[{ctx.client_ip}]", "{client_addr}": ctx.client_ip}), t.command)
    if not s & p.NOCONNECT:
        await conv.step(p.connect(ctx.client_name if ctx.client_name != "unknown" else f"[{ctx.client_ip}]",
                                  ctx.client_ip, ctx.client_port), p.NR_CONN, t.command)
    if not s & p.NOHELO:
        await conv.step(p.helo(ctx.helo), p.NR_HELO, t.command)
    await conv.send(p.macros(p.MAIL, {"{mail_addr}": ctx.sender, "i": ctx.queue_id}), t.command)
    if not s & p.NOMAIL:
        await conv.step(p.mail(ctx.sender), p.NR_MAIL, t.command)
    for rcpt in ctx.recipients:
        await conv.send(p.macros(p.RCPT, {"{rcpt_addr}": rcpt}), t.command)
        if not s & p.NORCPT:
            await conv.step(p.rcpt(rcpt), p.NR_RCPT, t.command)
    if not s & p.NODATA:
        await conv.step(p.packet(p.DATA), p.NR_DATA, t.command)
    head, body = split_message(ctx.message)
    if not s & p.NOHDRS:
        for name, value in _header_fields(head):
            await conv.step(p.header(name, value.replace("\n", "\r\n")), p.NR_HDR, t.command)
    if not s & p.NOEOH:
        await conv.step(p.packet(p.EOH), p.NR_EOH, t.command)
    if not s & p.NOBODY:
        body = body[2:] if body.startswith(b"\r\n") else body[1:] if body.startswith(b"\n") else body
        for chunk in p.body_chunks(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
            if await conv.step(chunk, p.NR_BODY, t.content) == "skip":
                break
    return await _end_of_message(conv)


async def _end_of_message(conv: _Conversation) -> MilterVerdict:
    await conv.send(p.packet(p.BODYEOB), conv.timeouts.content)
    edits: list[p.HeaderEdit] = []
    quarantine: str | None = None
    while True:
        reply = await conv.read(conv.timeouts.content)
        if isinstance(reply, p.HeaderEdit):
            allowed = p.ADDHDRS if reply.op != "change" else p.CHGHDRS
            if not conv.actions & allowed:
                raise p.ProtocolError(f"header {reply.op} not negotiated")
            edits.append(reply)
        elif isinstance(reply, p.Quarantine):
            if not conv.actions & p.QUARANTINE:
                raise p.ProtocolError("quarantine not negotiated")
            quarantine = reply.reason or "quarantined by filter"
        elif isinstance(reply, p.ReplyCode):
            return _replycode(reply)
        elif isinstance(reply, p.Simple):
            if reply.kind == "progress":
                continue
            if reply.kind in ("continue", "accept"):
                return MilterVerdict(reply.kind, edits=edits, quarantine=quarantine)
            if reply.kind == "skip":
                raise p.ProtocolError("skip at end of message")
            verdict = _refusal(reply.kind)
            verdict.quarantine = quarantine
            return verdict
        else:
            raise p.ProtocolError("option negotiation at end of message")


async def check_message(spec: MilterSpec, ctx: MessageContext, timeouts: Timeouts) -> MilterVerdict:
    """The filter's verdict on one message; ``error`` (with ``reason``) when it could not give one."""
    try:
        if spec.path:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(spec.path), timeouts.connect)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(spec.host, spec.port), timeouts.connect)
    except (OSError, TimeoutError) as exc:
        return MilterVerdict("error", reason=f"cannot connect: {exc or type(exc).__name__}")
    conv = _Conversation(reader, writer, timeouts)
    try:
        verdict = await _converse(conv, ctx)
    except _Done as done:
        verdict = done.verdict
    except TimeoutError:
        verdict = MilterVerdict("error", reason="timed out")
    except (OSError, p.ProtocolError, UnicodeError) as exc:
        verdict = MilterVerdict("error", reason=str(exc) or type(exc).__name__)
    finally:
        with contextlib.suppress(Exception):
            writer.write(p.packet(p.QUIT))
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return verdict
