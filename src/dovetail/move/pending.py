"""Unfinished tenant moves, said where an operator looks: the start log of ``dovetail serve`` and
``dovetail status``.

A move interrupted by kill -9 (or a crash, or a reboot) stays where its record stopped until someone runs
``dovetail tenant move T --to NODE`` again on the target node, or ``--abort`` before the switch. One left
in ``final-sync`` keeps the tenant paused: its mail waits in the senders' queues and its IMAP logins are
refused. The master does not resume it by itself (the operator's command and a resumed run must not pull
into the same folder at once, and the old home may not be up yet); it says what is pending and the
command that carries it on.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from ..directory.moves import Move, MoveStore

_EFFECT = {"copying": "mail still goes to the old home",
           "final-sync": "deliveries to the tenant are PAUSED and its IMAP logins refused",
           "switched": "the new home is live; the old copy is not set aside yet"}


def describe(move: Move, here: str = "") -> str:
    """One line: what the move left undone and the command that finishes (or ends) it."""
    where = "this node" if here and here.strip().lower() == move.target else f"node {move.target}"
    resume = f"resume it on {where} with `dovetail tenant move {move.tenant} --to {move.target}`"
    if move.state in ("copying", "final-sync"):
        resume += f" (or end it with `dovetail tenant move {move.tenant} --abort`)"
    effect = _EFFECT.get(move.state, "")
    return (f"tenant {move.tenant}: move {move.id} from node {move.source} to node {move.target} stopped at "
            f"{move.state}{': ' + effect if effect else ''}; {resume}")


def pending_notes(engine: Engine, here: str = "") -> list[str]:
    """:func:`describe` for each unfinished move."""
    return [describe(move, here) for move in MoveStore(engine).pending()]
