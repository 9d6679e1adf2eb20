"""Run as a subprocess by the crash tests: a queue manager delivering into Maildirs until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from dovetail.delivery import MailboxTarget, MaildirDeliveryAgent
from dovetail.queue import Queue, QueueConfig, QueuedMessage, QueueManager, QueueRecipient


class Announcing:
    """Prints ``<qid>`` after each delivery call returns, flushed, so the parent can time its kill."""

    def __init__(self, inner: MaildirDeliveryAgent) -> None:
        self.inner = inner

    async def deliver(self, msg: QueuedMessage, rcpts: list[QueueRecipient]) -> list:  # noqa: ANN001
        res = await self.inner.deliver(msg, rcpts)
        sys.stdout.write(msg.queue_id + "\n")
        sys.stdout.flush()
        return res


def agent_for(mail: Path) -> MaildirDeliveryAgent:
    return MaildirDeliveryAgent(lambda a: [MailboxTarget(a, mail / a.partition("@")[0])])


async def main() -> None:
    queue = Queue(Path(sys.argv[1]))
    agent = Announcing(agent_for(Path(sys.argv[2])))
    await QueueManager(queue, lambda a: agent, QueueConfig(max_concurrent_deliveries=4)).run()


if __name__ == "__main__":
    asyncio.run(main())
