"""A cancelled IMAP client read ends cancelled, even when its data arrives in the same loop turn.

Python 3.11's ``asyncio.wait_for`` returned the read's data there and dropped the cancellation: the
task went on reading as "cancelling" and a stopped replies source never ended (seen as a flaky stop
test under load). The arrival is made deterministic by handing bytes to the client's stream reader
in the same turn as the cancel.
"""

from __future__ import annotations

import asyncio

import pytest

from dovetail.replies.imapc.client import ImapClient


async def _greeting_server() -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
        await writer.drain()
        await reader.read()  # hold the connection until the client leaves
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_cancel_that_meets_arriving_data_is_not_lost() -> None:
    async def main() -> None:
        server = await _greeting_server()
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = ImapClient("127.0.0.1", port, tls="none", timeout=10)
            await client.connect()
            reading = asyncio.create_task(client._read())
            await asyncio.sleep(0)  # the read is now waiting on the socket
            assert not reading.done()
            client._reader.feed_data(b"* 3 EXISTS\r\n")  # data and cancel in one turn
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            await client.close()

    asyncio.run(main())
