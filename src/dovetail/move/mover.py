"""The mover: runs on the target node and pulls a tenant's Maildirs from its old home, as ``doveadm sync``
(dsync) runs where the mail is going.

Steps, each recorded in the move record (:mod:`dovetail.directory.moves`) before the next begins:

1. ``copying``: pull the tenant's tree into ``mail/.moving/<tenant>`` while mail still flows to the old
   home (a rerun after a kill keeps what arrived: only missing message files travel again);
2. pause the tenant (``final-sync``), wait one directory cache interval so every node's workers see the
   pause (deliveries then get ``4.2.0`` and wait in the senders' queues; IMAP logins are refused), pull
   once more (only what changed), and rename the copy to ``mail/<tenant>``;
3. switch the home in one transaction that also lifts the pause (``switched``): queued mail now goes to
   the new home;
4. ask the old home to set its copy aside under ``mail/.moved-away/`` (``cleaned``).

Transport: HTTP to the old home's transfer endpoint (:mod:`dovetail.move.endpoint`), authenticated by
``cluster.secret``. Use TLS between nodes by keeping the endpoint on a private network or a tunnel: it
is plain HTTP, like LMTP between nodes.

``DOVETAIL_TEST_MOVE_STALL=copying:N`` (or ``final-sync``) exists for the test suite only: the copying pass
stops after N files (or the final sync right after the pause), writes ``mail/.moving/<tenant>.stalled`` and
waits forever, so a test can kill -9 the mover at that point.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from sqlalchemy.engine import Engine

from ..directory.moves import Move, MoveError, MoveStore
from ..directory.nodes import Node
from ..durable import fsync_dir
from ..privileges import chown_tree
from ..storage.transfer import TransferError, import_tree, tree_files
from .endpoint import STAGING, tenant_folder

STALL_ENV = "DOVETAIL_TEST_MOVE_STALL"
Progress = Callable[[str, int, int, int], None]  # (phase, files done, files to send, bytes received)


class Unreachable(MoveError):
    """The old home's transfer endpoint did not answer, or refused us."""


class _Stream(io.RawIOBase):
    """An HTTP response body as a readable file (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buffer:
            try:
                self.buffer = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self.buffer))
        b[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n


class TransferClient:
    """Requests to one node's transfer endpoint."""

    def __init__(self, node: Node, secret: str, timeout: float = 30.0) -> None:
        if not node.transfer:
            raise MoveError(f"node {node.name} has no transfer address")
        self.node = node
        self.http = httpx.Client(base_url=f"http://{node.transfer}", timeout=httpx.Timeout(timeout),
                                 headers={"Authorization": f"Bearer {secret}"})

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                why = response.json().get("detail", response.text)
            except ValueError:
                why = response.text
            raise Unreachable(f"node {self.node.name} ({self.node.transfer}) refused: "
                              f"{response.status_code} {why}")

    def ping(self) -> None:
        try:
            response = self.http.get("/cluster/v1/ping")
        except httpx.HTTPError as exc:
            raise Unreachable(f"node {self.node.name} is unreachable at {self.node.transfer}: {exc}") from None
        self._check(response)
        named = response.json().get("node")
        if named != self.node.name:
            raise Unreachable(f"{self.node.transfer} answers as node {named!r}, not {self.node.name}")

    @contextlib.contextmanager
    def export(self, tenant: str, have: dict[str, int]) -> Iterator[BinaryIO]:
        try:
            with self.http.stream("POST", f"/cluster/v1/tenants/{tenant}/export", json={"have": have}) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                yield io.BufferedReader(_Stream(response.iter_raw()), 256 * 1024)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise Unreachable(f"transfer from node {self.node.name} broke off: {exc}") from None

    def usage(self, tenant: str) -> dict[str, dict[str, int]]:
        """What each mailbox of ``tenant`` holds on that node (its home): ``{address: {bytes, messages}}``."""
        try:
            response = self.http.get(f"/cluster/v1/tenants/{tenant}/usage")
        except httpx.HTTPError as exc:
            raise Unreachable(f"node {self.node.name} is unreachable at {self.node.transfer}: {exc}") from None
        self._check(response)
        try:
            body = response.json()
        except ValueError:
            raise Unreachable(f"node {self.node.name} ({self.node.transfer}) answered usage with a body "
                              "that is not JSON") from None
        mailboxes = body.get("mailboxes") if isinstance(body, dict) else None
        if not isinstance(mailboxes, dict):
            raise Unreachable(f"node {self.node.name} ({self.node.transfer}) answered usage without a "
                              "'mailboxes' object")
        found: dict[str, dict[str, int]] = {}
        for address, entry in mailboxes.items():
            try:
                found[str(address)] = {"bytes": int(entry["bytes"]), "messages": int(entry["messages"])}
            except (TypeError, KeyError, ValueError):
                raise Unreachable(f"node {self.node.name} ({self.node.transfer}) answered usage with a "
                                  f"malformed entry for {str(address)[:100]!r}") from None
        return found

    def release(self, tenant: str, move_id: int) -> str | None:
        try:
            response = self.http.post(f"/cluster/v1/tenants/{tenant}/release", json={"move": move_id})
        except httpx.HTTPError as exc:
            raise Unreachable(f"node {self.node.name} is unreachable at {self.node.transfer}: {exc}") from None
        self._check(response)
        return response.json().get("kept")


class Mover:
    """Drives one tenant's move record to ``cleaned`` from whatever state it is in."""

    def __init__(self, engine: Engine, mail_root: Path, here: str, secret: str, *, settle: float,
                 progress: Progress | None = None) -> None:
        self.moves = MoveStore(engine)
        self.mail_root = mail_root
        self.here = here.strip().lower()
        self.secret = secret
        self.settle = settle
        self.progress = progress or (lambda phase, done, total, size: None)

    def prepare(self, tenant: str, target: str) -> tuple[Move | None, str, Node, Node]:
        """Check everything before anything is written: the move to resume (or None), the tenant's
        name, the source and the target node. Raises MoveError (Unreachable included)."""
        if not self.secret:
            raise MoveError("cluster.secret is not set on this node: set the cluster's shared secret first")
        if not self.here:
            raise MoveError("node.name is not set: run the move on the target node of the cluster")
        resume, name, source, dest = self.moves.check_target(tenant, target)
        if dest.name != self.here:
            raise MoveError(f"run the move on the target node {dest.name} (this is node {self.here}): "
                            "it pulls the mail into its own data directory")
        if resume is None and any(tenant_folder(self.mail_root, name).iterdir()
                                  if tenant_folder(self.mail_root, name).is_dir() else ()):
            raise MoveError(f"this node already has mail of tenant {name} in {tenant_folder(self.mail_root, name)}:"
                            " move it aside first")
        if resume is None or resume.state in ("copying", "final-sync", "switched"):
            client = TransferClient(source, self.secret)
            try:
                client.ping()
            finally:
                client.close()
        return resume, name, source, dest

    def run(self, tenant: str, target: str) -> Move:
        resume, name, source, dest = self.prepare(tenant, target)
        move = resume or self.moves.begin(name, source.name, dest.name)
        client = TransferClient(source, self.secret, timeout=300.0)
        try:
            return self._drive(move, client)
        finally:
            client.close()

    def _drive(self, move: Move, client: TransferClient) -> Move:
        staging = self.mail_root / STAGING / move.tenant
        final = tenant_folder(self.mail_root, move.tenant)
        while not move.finished:
            if move.state == "copying":
                self._pull(move, client, staging, "copying", stall=True)
                move = self.moves.pause(move)
            elif move.state == "final-sync":
                if not staging.exists() and final.exists():
                    os.replace(final, staging)  # killed between the rename and the switch: sync it again
                time.sleep(self.settle)  # every worker's directory cache now sees the pause
                if os.environ.get(STALL_ENV) == "final-sync":
                    self._stall(move)
                self._pull(move, client, staging, "final sync", stall=False)
                final.parent.mkdir(parents=True, exist_ok=True)
                owner = self.mail_root.stat()
                if os.geteuid() == 0:  # the copy belongs to whoever serves mail/, not to the operator
                    chown_tree(staging, owner.st_uid, owner.st_gid)
                os.replace(staging, final)
                fsync_dir(self.mail_root)
                move = self.moves.switch(move)
            elif move.state == "switched":
                kept = client.release(move.tenant, move.id)
                move = self.moves.cleaned(move, f"old copy kept on {move.source} at {kept}" if kept else "")
        (self.mail_root / STAGING / f"{move.tenant}.stalled").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.mail_root / STAGING).rmdir()
        return move

    def _stall(self, move: Move) -> None:
        """The test suite's kill point (see the module docstring)."""
        marker = self.mail_root / STAGING / f"{move.tenant}.stalled"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        while True:
            time.sleep(3600)

    def _pull(self, move: Move, client: TransferClient, staging: Path, phase: str, *, stall: bool) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        phase_env, _, count = os.environ.get(STALL_ENV, "").partition(":")
        stall_after = int(count or 0) if stall and phase_env == "copying" else 0
        received = {"files": 0, "bytes": 0}

        def progress(done: int, total: int, size: int) -> None:
            received["files"] = done
            received["bytes"] += size
            self.progress(phase, done, total, received["bytes"])

        def after_file(n: int) -> None:
            if stall_after and n >= stall_after:
                self._stall(move)

        try:
            with client.export(move.tenant, tree_files(staging)) as stream:
                import_tree(stream, staging, progress=progress, after_file=after_file)
        except TransferError as exc:
            raise Unreachable(f"transfer from node {client.node.name}: {exc}") from None
        self.moves.record(move, files=received["files"], size=received["bytes"], note=f"{phase} pass done")


def discard_staging(mail_root: Path, tenant: str) -> None:
    """After an abort: the partial copy on this node goes."""
    shutil.rmtree(mail_root / STAGING / tenant, ignore_errors=True)
    (mail_root / STAGING / f"{tenant}.stalled").unlink(missing_ok=True)

