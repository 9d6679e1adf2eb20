"""Drive the sans-I/O core without sockets: feed bytes, answer events, collect events and reply bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dovetail.smtp import events as ev
from dovetail.smtp.protocol import SmtpConnection
from dovetail.smtp.reply import Reply

QUEUED = Reply(250, "2.0.0", "Ok: queued as TEST")


def standard(conn: SmtpConnection, event: ev.Event) -> Reply:
    """Accept everything, as a permissive backend would."""
    if isinstance(event, (ev.MessageEnd, ev.BdatEnd)) and (not isinstance(event, ev.BdatEnd) or event.last):
        return QUEUED
    if isinstance(event, ev.Auth):
        return Reply(535, "5.7.8", "Error: authentication failed")
    return conn.default_reply(event)


class Driver:
    def __init__(self, conn: SmtpConnection | None = None, answer: Callable | None = None) -> None:
        self.conn = conn or SmtpConnection(hostname="mx.test")
        self.answer = answer or standard
        self.events: list[ev.Event] = []
        self.output = bytearray()

    def feed(self, data: bytes) -> list[ev.Event]:
        self.conn.receive_data(data)
        got = []
        while True:
            event = self.conn.next_event()
            if isinstance(event, ev.NeedData):
                break
            got.append(event)
            if event.needs_reply:
                self.output += self.conn.send_reply(self.answer(self.conn, event))
        self.events += got
        return got

    def feed_pieces(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self.feed(piece)

    def replies(self) -> list[str]:
        """Reply lines as text."""
        return self.output.decode("utf-8").split("\r\n")[:-1]

    def codes(self) -> list[str]:
        """The final line of each reply: '250 2.1.0 Ok' etc."""
        return [line for line in self.replies() if line[3:4] == " " or len(line) == 3]

    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, ev.DataChunk))


def merged(events: list[ev.Event]) -> list[ev.Event]:
    """Events with adjacent DataChunks joined: chunk boundaries follow read boundaries, content must not."""
    out: list[ev.Event] = []
    for e in events:
        if isinstance(e, ev.DataChunk) and out and isinstance(out[-1], ev.DataChunk):
            out[-1] = ev.DataChunk(out[-1].data + e.data)
        else:
            out.append(e)
    return out


def session(conn: SmtpConnection | None = None) -> Driver:
    d = Driver(conn)
    d.feed(b"EHLO client.test\r\n")
    return d
