"""The MX with its queue on a full file system answers ``452 4.3.1`` (try later), never takes the mail
and loses it, and takes mail again once there is room."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dovetail.queue import Queue
from tests.fulldisk import fill, small_tmpfs
from tests.intake.conftest import Client, Mx


def test_full_queue_disk_answers_452_4_3_1(mx: Mx, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "full", "1m") as disk:
        mx.queue = Queue(disk / "queue")

        async def send() -> tuple[int, str]:
            port = await mx.start(mx.backend())
            try:
                c = await Client.connect(port)
                await c.reply()
                for line in ("EHLO client.example", "MAIL FROM:<a@ext.example>", "RCPT TO:<bob@acme.example>"):
                    assert (await c.cmd(line))[0] == 250
                assert (await c.cmd("DATA"))[0] == 354
                answer = await c.cmd("Subject: hi\r\n\r\n" + "x" * 20000 + "\r\n.")
                await c.cmd("QUIT")
                return answer
            finally:
                await mx.stop()

        filler = fill(disk)
        code, text = asyncio.run(send())
        assert (code, text[:5]) == (452, "4.3.1"), text
        filler.unlink()
        mx.servers.clear()
        code, text = asyncio.run(send())
        assert code == 250, text
