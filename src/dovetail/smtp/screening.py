"""What the SMTP listener asks of a screening stage (Postfix's postscreen) before a session starts.

The listener owns the socket; the stage (the MX's policy, in ``dovetail.intake.screen``) decides.
It may start a multi-line banner (``220-``) and wait to see whether the client talks before the
banner is complete, then lets the session start or refuses the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dovetail.smtp.reply import Reply


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refuse the client: ``reply`` (None: drop the connection without a word). ``at_greeting``: sent
    in place of the banner; otherwise the banner is completed and ``reply`` answers the client's first
    command, so the client sees a well-formed dialogue."""

    reply: Reply | None
    at_greeting: bool = False


class ScreenPeer(Protocol):
    """The connection as the stage sees it."""

    @property
    def client_ip(self) -> str: ...

    @property
    def client_port(self) -> int: ...

    @property
    def stressed(self) -> bool:
        """The listener is in stress mode (the stage shortens its waits)."""
        ...

    @property
    def early_input(self) -> bytes:
        """What the client sent so far (before any banner line was complete)."""
        ...

    @property
    def hung_up(self) -> bool: ...

    def banner_start(self) -> None:
        """Send the first line of a multi-line banner (``220-host ESMTP``)."""

    async def wait_for_input(self, seconds: float) -> None:
        """Return after ``seconds``, or earlier when the client sends something or hangs up."""


class Screen(Protocol):
    async def screen(self, peer: ScreenPeer) -> Refusal | None:
        """None lets the SMTP session start."""
        ...
