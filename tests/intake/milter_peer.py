"""A scripted milter for tests: a real TCP server speaking the filter side of the protocol.

It answers option negotiation with the steps and actions it is told to, records every command it
receives, and at each stage answers what the script says (``continue`` by default); at end of
message it sends the scripted header edits, quarantine and final verdict. ``garbage``, ``close_at``
and ``stall_at`` make it misbehave at a given stage.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from dovetail.intake.milter import protocol as p

NAMES = {b"C": "connect", b"H": "helo", b"M": "mail", b"R": "rcpt", b"T": "data", b"L": "header", b"N": "eoh",
         b"B": "body", b"E": "eom"}


def reply(command: bytes, data: bytes = b"") -> bytes:
    return p.packet(command, data)


def addheader(name: str, value: str) -> bytes:
    return reply(b"h", name.encode() + b"\0" + value.encode() + b"\0")


def chgheader(index: int, name: str, value: str) -> bytes:
    return reply(b"m", struct.pack(">I", index) + name.encode() + b"\0" + value.encode() + b"\0")


def insheader(index: int, name: str, value: str) -> bytes:
    return reply(b"i", struct.pack(">I", index) + name.encode() + b"\0" + value.encode() + b"\0")


def replycode(text: str) -> bytes:
    return reply(b"y", text.encode() + b"\0")


@dataclass
class Script:
    steps: int = 0  # SMFIP_* flags the filter asks for
    actions: int = p.ADDHDRS | p.CHGHDRS | p.QUARANTINE
    at: dict[str, bytes] = field(default_factory=dict)  # stage -> raw reply bytes instead of continue
    eom: list[bytes] = field(default_factory=list)  # replies at end of message (before the final one)
    final: bytes = reply(b"c")
    garbage: str | None = None  # stage at which to answer garbage
    close_at: str | None = None  # stage at which to close the connection
    stall_at: str | None = None  # stage at which to go silent


class MilterPeer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[tuple[str, bytes]] = []
        self.macros: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> MilterPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()

    @property
    def spec(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def stages(self) -> list[str]:
        return [name for name, _ in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        decoder = p.Decoder()
        s = self.script
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for command, payload in decoder.feed(data):
                    if command == p.OPTNEG:
                        writer.write(reply(p.OPTNEG, struct.pack(">III", 6, s.actions, s.steps)))
                        continue
                    if command == p.MACRO:
                        self.macros.append(payload)
                        continue
                    if command in (p.QUIT, p.ABORT):
                        return
                    stage = NAMES[command]
                    self.received.append((stage, payload))
                    if stage == s.close_at:
                        return
                    if stage == s.stall_at:
                        await asyncio.sleep(3600)
                    if stage == s.garbage:
                        writer.write(b"\x00\x00\x00\x05zjunk")
                    elif stage == "eom":
                        writer.write(b"".join(s.eom) + s.final)
                    elif stage in s.at:
                        writer.write(s.at[stage])
                    elif not self._no_reply(stage):
                        writer.write(reply(b"c"))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _no_reply(self, stage: str) -> bool:
        flag = {"connect": p.NR_CONN, "helo": p.NR_HELO, "mail": p.NR_MAIL, "rcpt": p.NR_RCPT, "data": p.NR_DATA,
                "header": p.NR_HDR, "eoh": p.NR_EOH, "body": p.NR_BODY}[stage]
        return bool(self.script.steps & flag)
