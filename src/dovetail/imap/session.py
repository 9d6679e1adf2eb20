"""One IMAP connection's state machine: parser events in, response bytes out.

The session owns no socket. ``receive_data(bytes)`` feeds the parser and runs the commands;
``data_to_send()`` hands back the response bytes. It is ``async`` only because the authenticator and
the storage are: every storage call that may block on disk runs in a thread (``asyncio.to_thread``),
one call at a time per session, as the storage API asks. The asyncio adapter in ``server.py`` moves
bytes, runs the IDLE wait and the STARTTLS handshake, and enforces the autologout timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from dovetail.imap.commands import COMMANDS as STORAGE_COMMANDS
from dovetail.imap.commands import notify, search_context
from dovetail.imap.commands.fetch import fetch_lines
from dovetail.imap.limits import Limits
from dovetail.imap.parser import (
    Atom,
    BadCommand,
    Command,
    CommandParser,
    ContinuationRequest,
    Line,
    ListToken,
    ParseError,
    String,
    astring,
)
from dovetail.imap.response import flag_list
from dovetail.imap.state import ANY, AUTH, NOAUTH, SEL, CommandError, Selected, State
from dovetail.imap.storage_errors import is_bad, response_code
from dovetail.imap.typed import TypedCommand, typed
from dovetail.log import get_logger
from dovetail.mailauth import proxytoken
from dovetail.mailauth.accounts import Account, Authenticator
from dovetail.mailauth.homes import LoginHomes, Refusal, Route
from dovetail.mailauth.penalty import AuthPenalty
from dovetail.mailauth.sasl import MECHANISMS, Challenge, Credentials, Reason, SaslExchange, Step
from dovetail.mailauth.slots import MemorySlots, Slots
from dovetail.storage.api import SYSTEM_FLAGS, Changes, MailStorage, StorageError

log = get_logger("imap")
T = TypeVar("T")


@dataclass
class ConnInfo:
    remote_ip: str = "127.0.0.1"
    remote_port: int = 0
    local_ip: str = "127.0.0.1"
    local_port: int = 0
    tls: bool = False
    secure: bool = False  # TLS, loopback or a trusted network: plaintext logins allowed
    starttls_available: bool = False


@dataclass(frozen=True)
class ProxyRequest:
    """A login to hand to the account's home node (the adapter in ``proxy.py`` does it).

    ``grant`` and ``token`` are what the home node is shown: the client, the hops left, and the proof
    (:mod:`dovetail.mailauth.proxytoken`); ``local`` is this node's side of the client's connection."""

    tag: str
    method: str
    route: Route
    grant: proxytoken.Grant
    token: str
    local: tuple[str, int]


class UserRegistry:
    """Connections per user, shared by the sessions of one server (and by the workers of a service
    when ``slots`` is shared, see :mod:`dovetail.mailauth.slots`)."""

    def __init__(self, limit: int, slots: Slots | None = None) -> None:
        self.limit = limit
        self.slots: Slots = slots if slots is not None else MemorySlots()

    @staticmethod
    def key(user: str) -> str:
        return "u:" + user

    def acquire(self, user: str) -> bool:
        return self.slots.acquire(self.key(user), self.limit)

    def release(self, user: str) -> None:
        self.slots.release(self.key(user))


# EXPUNGE responses are not allowed while these run (RFC 3501 7.4.1), unless as UID commands
NO_EXPUNGE = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}
# Commands after which the refresh may leave other programs' changes on disk for a moment (the
# storage API's ``fast``): the ones Dovecot syncs with MAILBOX_SYNC_FLAG_FAST.
FAST_SYNC = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY"}

IDLE_SAFETY_REFRESH = 30.0
BASE_CAPS = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE")
AUTH_CAPS = ("UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
             "LIST-STATUS", "ESEARCH", "SEARCHRES", "CONDSTORE", "QRESYNC", "STATUS=SIZE", "SORT",
             "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "UTF8=ACCEPT", "BINARY", "UNAUTHENTICATE",
             "MULTIAPPEND", "CATENATE", "ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT",
             "QUOTA", "QUOTA=RES-STORAGE", "PREVIEW", "COMPRESS=DEFLATE", "NOTIFY")


class Session:
    def __init__(
        self,
        authenticator: Authenticator,
        storage_factory: Callable[[Account], MailStorage],
        limits: Limits | None = None,
        conn: ConnInfo | None = None,
        penalty: AuthPenalty | None = None,
        users: UserRegistry | None = None,
        server_name: str = "Dovetail",
        homes: LoginHomes | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.homes = homes  # in a cluster: which logins are proxied, and which peers are nodes
        self.storage_factory = storage_factory
        self.limits = limits or Limits()
        self.conn = conn or ConnInfo()
        self.penalty = penalty or AuthPenalty(self.limits.auth_fail_base_delay, self.limits.auth_fail_max_delay,
                                              self.limits.auth_fail_lockout, self.limits.auth_fail_window)
        self.users = users or UserRegistry(self.limits.max_connections_per_user)
        self.server_name = server_name
        self.parser = CommandParser(self.limits)
        self.state = State.NOT_AUTHENTICATED
        self.account: Account | None = None
        self.storage: MailStorage | None = None
        self.selected: Selected | None = None
        self.enabled: set[str] = set()
        self.notify: Any = None  # NOTIFY's NotifySpec (commands/notify.py)
        self.closed = False
        self.starttls_requested = False
        self.proxy_requested: ProxyRequest | None = None
        self.proxied_to: str | None = None  # the home node the session was handed to
        self.forwarded_by: str | None = None  # the node that proxied this connection here (its ID said so)
        self.hops_left = proxytoken.DEFAULT_TTL
        self.idling: str | None = None  # tag of the running IDLE
        self.bytes_in = 0
        self.bytes_out = 0
        self.bad_commands = 0
        self.auth_failures = 0
        self.logout_reason = "Connection closed"
        # Response pieces, joined once when sent: a bytearray grown by each line copied a large FETCH
        # response three times (line + CRLF, the append, the bytes() of it) and freed it once more.
        self._out: list[bytes] = []
        # COMPRESS=DEFLATE (RFC 4978): raw deflate both ways once the tagged OK has gone out plain.
        self._inflate: Any = None
        self._deflate: Any = None
        self._deflate_next = False
        self._flag_lists: dict[tuple[frozenset[str], bool], bytes] = {}
        self._keywords_shown: set[str] = set()  # keywords the last FLAGS response named
        self._keywords_owed: set[str] = set()  # keywords formatted for output but not yet in a FLAGS response
        self._sasl: tuple[str, SaslExchange] | None = None  # tag and exchange awaiting a line
        self._user_slot: str | None = None
        self._last_activity = self._started = time.monotonic()
        self._idle_started = 0.0
        self._idle_refreshed = 0.0
        # What the refresh run in a command's own thread call found (see work_then_refresh), for updates().
        self._refreshed: tuple[Any, Changes] | None = None

    # -- I/O surface ------------------------------------------------------------------------------------

    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        self.write(f"* OK [CAPABILITY {caps}] {self.server_name} ready.")
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out = []
        if self._deflate is not None and out:
            out = self._deflate.compress(out) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        elif self._deflate_next:  # the OK to COMPRESS goes out as it is; what follows is compressed
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._deflate_next = False
        self.bytes_out += len(out)
        return out

    def write(self, line: str | bytes) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        elif type(line) is not bytes:
            line = bytes(line)  # a buffer its writer may change before it is sent
        self._out += (line, b"\r\n")

    @property
    def quota_bytes(self) -> int:
        return self.account.quota_bytes if self.account is not None else 0

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def flags_out(self, flags: frozenset[str], recent: bool) -> bytes:
        """A FETCH FLAGS list; ``\\Recent`` is an IMAP4rev1 notion that IMAP4rev2 dropped. A mailbox
        has few distinct flag sets, so each list is formatted once (FETCH 1:* asks for thousands)."""
        key = (flags if isinstance(flags, frozenset) else frozenset(flags), recent and not self.rev2)
        out = self._flag_lists.get(key)
        if out is None:
            if len(self._flag_lists) >= 512:
                self._flag_lists.clear()
            self.note_keywords(flags)
            out = self._flag_lists[key] = flag_list(flags | {"\\Recent"} if key[1] else flags)
        return out

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (FETCH MODSEQ, STORE UNCHANGEDSINCE, SEARCH MODSEQ): the first
        one in a selected mailbox reports its HIGHESTMODSEQ, as RFC 7162 §3.1 requires."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.write(f"* OK [HIGHESTMODSEQ {self.selected.mailbox.highestmodseq}] Highest")

    def note_keywords(self, flags: Iterable[str]) -> None:
        """Remember keywords the client has not been told of: a FLAGS response is owed before they show."""
        shown = self._keywords_shown
        for flag in flags:
            if not flag.startswith("\\") and flag not in shown:
                self._keywords_owed.add(flag)

    def flags_response(self, *, reset: bool = False) -> None:
        """``* FLAGS`` and ``PERMANENTFLAGS`` naming the system flags and every keyword shown so far.

        RFC 3501 §7.2.6: FLAGS lists the flags applicable in the mailbox, and clients (and imaptest)
        hold a keyword in a FETCH that no FLAGS response named to be an error; so SELECT names the
        system flags, and each keyword is announced the first time it is about to appear, as Dovecot
        does when a keyword is created. ``reset`` starts a new mailbox's list.
        """
        if reset:
            self._keywords_shown = set()
            self._keywords_owed = set()
            self._flag_lists.clear()
        self._keywords_shown |= self._keywords_owed
        self._keywords_owed = set()
        flags = flag_list(SYSTEM_FLAGS | self._keywords_shown).decode()
        self.write(f"* FLAGS {flags}")
        if self.selected is not None and self.selected.readonly:
            self.write("* OK [PERMANENTFLAGS ()] Read-only mailbox.")
        else:
            self.write(f"* OK [PERMANENTFLAGS {flags[:-1]} \\*)] Flags permitted.")

    def announce_keywords(self) -> None:
        """Send the FLAGS response owed for new keywords, if any; call before writing FETCH lines."""
        if self._keywords_owed:
            self.flags_response()

    def seconds_left(self) -> float:
        """Time until autologout (or until a long IDLE is ended)."""
        now = time.monotonic()
        if self.idling:
            return self._idle_started + self.limits.max_idle_time - now
        if self.state in AUTH:
            return self._last_activity + self.limits.idle_timeout - now
        return min(self._last_activity + self.limits.unauth_timeout, self._started + self.limits.login_timeout) - now

    def timed_out(self) -> None:
        self.write("* BYE Disconnected for inactivity.")
        self.logout_reason = "Disconnected for inactivity"
        self.closed = True

    def shutdown(self) -> None:
        self.write("* BYE Server shutting down.")
        self.logout_reason = "Server shutting down"
        self.closed = True

    def tls_started(self) -> None:
        self.conn.tls = True
        self.conn.secure = True
        self.starttls_requested = False

    def feed(self, data: bytes) -> None:
        """Take bytes from the client; run them with ``step()``."""
        self.bytes_in += len(data)
        if self._inflate is not None:
            data = self._inflated(data)
        self.parser.feed(data)

    def _inflated(self, data: bytes) -> bytes:
        try:
            # Bounded, so a few compressed bytes cannot grow into more than a command may hold.
            out = self._inflate.decompress(data, self.limits.max_command + 1)
        except zlib.error:
            out = b""
            self.write("* BYE Invalid compressed data.")
            self.logout_reason = "Invalid compressed data"
            self.closed = True
        if len(out) > self.limits.max_command or self._inflate.unconsumed_tail:
            self.write("* BYE Too much data.")
            self.logout_reason = "Compressed command too large"
            self.closed = True
            return b""
        return out

    async def step(self) -> bool:
        """Handle the next complete event (one command, usually); False when more bytes are needed.

        The adapter sends ``data_to_send()`` after each step, so a client that pipelines many commands
        gets its answers as they are made instead of having them pile up in memory.
        """
        if self.closed or self.starttls_requested or self.proxy_requested:
            return False
        ev = self.parser.next_event()
        if ev is None:
            return False
        self._last_activity = time.monotonic()  # complete commands count, a trickle of bytes does not
        await self._handle(ev)
        if self.starttls_requested:
            self.parser = CommandParser(self.limits)  # nothing sent before the handshake is kept
        if self._deflate_next and self._inflate is None:
            # The client compresses from the byte after its COMPRESS command's line.
            self._inflate = zlib.decompressobj(-15)
            rest = self.parser.take_buffer()
            if rest:
                self.parser.feed(self._inflated(rest))
        return True

    async def receive_data(self, data: bytes) -> None:
        """``feed`` and run every complete command."""
        self.feed(data)
        while await self.step():
            pass

    async def connection_lost(self, keep_slot: bool = False) -> None:
        """Release what the session holds; log the Dovecot-style disconnect line. With ``keep_slot`` the
        user's connection slot is left to the caller (``take_slot``), to give back with the IP's."""
        await self.unselect()
        if self._user_slot and not keep_slot:
            await asyncio.to_thread(self.users.release, self._user_slot)
            self._user_slot = None
        if self.state is State.LOGOUT:
            reason = "Logged out"
        else:
            reason = self.logout_reason
        who = f", user=<{self.account.username}>" if self.account else ""
        if self.proxied_to:
            reason = "Proxied session ended"
            who += f", proxy={self.proxied_to}"
        log.info(f"Disconnected: {reason} in={self.bytes_in} out={self.bytes_out}{who}, "
                 f"rip={self.conn.remote_ip}")

    def take_slot(self) -> str | None:
        """The key of the user's connection slot the session holds, now the caller's to give back."""
        user, self._user_slot = self._user_slot, None
        return self.users.key(user) if user else None

    # -- event dispatch ---------------------------------------------------------------------------------

    async def _handle(self, ev: Any) -> None:
        if isinstance(ev, ContinuationRequest):
            self.write(f"+ {ev.text}")
            return
        if isinstance(ev, Line):
            await self._line(ev)
            return
        if isinstance(ev, BadCommand):
            if ev.status == "NO":
                self._tagged(ev.tag, "NO", ev.text, ev.code)
            else:
                self._bad(ev.tag, ev.text, ev.code)
            return
        assert isinstance(ev, Command)
        await self._command(ev)

    def _tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        self.write(f"{tag} {status} " + (f"[{code}] " if code else "") + text)

    def _bad(self, tag: str, text: str, code: str | None = None) -> None:
        self._tagged(tag, "BAD", text, code)
        self.bad_commands += 1
        if self.bad_commands >= self.limits.max_bad_commands:
            self.write("* BYE Too many invalid IMAP commands.")
            self.logout_reason = "Too many invalid commands"
            self.closed = True

    async def _command(self, cmd: Command) -> None:
        entry = _COMMANDS.get(cmd.name)
        if entry is None or cmd.uid and cmd.name not in _UID_COMMANDS:
            self._bad(cmd.tag, f"Unknown command {cmd.name[:30]}")
            return
        handler, states = entry
        if self.state not in states:
            if self.state is State.NOT_AUTHENTICATED:
                self._bad(cmd.tag, "Please log in first")
            elif cmd.name in ("LOGIN", "AUTHENTICATE"):
                self._bad(cmd.tag, "Already logged in")
            elif self.state is State.AUTHENTICATED and SEL == states:
                self._bad(cmd.tag, "No mailbox selected")
            else:
                self._bad(cmd.tag, f"{cmd.name} not allowed now")
            return
        if self._refreshed is not None:  # a command ended without its updates (not expected): report now
            done, self._refreshed = self._refreshed, None
            if done[0] is self.selected:
                self.report_changes(done[1])
        if self.selected is not None:
            self.selected.mailbox.command_started()
        try:
            ok = await handler(self, typed(cmd))  # the typed commands are read before they run
        except ParseError as exc:
            self._bad(cmd.tag, f"Error in IMAP command {cmd.name}: {exc.text}", exc.code)
            return
        except CommandError as exc:
            await self.updates(cmd)
            if exc.status == "BAD":
                self._bad(cmd.tag, exc.text, exc.code)
            else:
                self._tagged(cmd.tag, exc.status, exc.text, exc.code)
            return
        except StorageError as exc:
            await self.updates(cmd)
            text = str(exc) or type(exc).__name__
            if is_bad(exc):
                self._bad(cmd.tag, f"Error in IMAP command {cmd.name}: {text}")
            else:
                self._tagged(cmd.tag, "NO", text, response_code(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one bad command must not take the connection down
            log.exception("internal error", command=cmd.name, error=repr(exc))
            self._tagged(cmd.tag, "NO", "Internal error occurred. Refer to server log for more information.",
                         "SERVERBUG")
            return
        if ok is None:
            return  # the handler answers later (IDLE, AUTHENTICATE) or already did
        await self.updates(cmd)
        code, text = ok
        self._tagged(cmd.tag, "OK", text, code)

    async def updates(self, cmd: Command | TypedCommand | None = None) -> None:
        """Report what changed in the selected mailbox (new mail, other sessions' flags, expunges)."""
        sel = self.selected
        if self.closed:
            return
        if sel is None:
            if self.notify is not None:
                await notify.report(self)
            return
        allow = cmd is None or cmd.uid or cmd.name not in NO_EXPUNGE
        fast = cmd is not None and cmd.name in FAST_SYNC
        done, self._refreshed = self._refreshed, None
        if done is not None and done[0] is sel:
            old_uids = list(sel.mailbox.uids) if sel.contexts else []
            changes = done[1]
        else:
            old_uids = list(sel.mailbox.uids) if sel.contexts else []
            try:
                # Nothing changed (told by a few stats, or after FETCH/STORE/SEARCH... by the index's
                # commit counter alone): no thread hop for the refresh.
                quiet = sel.mailbox.refresh_if_quiet(fast=fast)
                changes = quiet if quiet is not None else await asyncio.to_thread(
                    sel.mailbox.refresh, allow_expunges=allow, fast=fast)
            except Exception as exc:  # noqa: BLE001 - the next command tries again
                log.warning("mailbox refresh failed", mailbox=sel.mailbox.name, error=repr(exc))
                return
        if sel.contexts:
            search_context.before_expunges(self, old_uids, changes)
        self.report_changes(changes)
        if sel.contexts and not self.closed:
            await search_context.after_command(self)
        if self.notify is not None and not self.closed:
            watch = self.notify.selected
            if watch is not None and watch.fetch and changes.new_uids:
                new, atts, mb = list(changes.new_uids), list(watch.fetch), sel.mailbox
                for line in await asyncio.to_thread(fetch_lines, self, mb, new, atts):
                    self.write(line)
            await notify.report(self)

    async def work_then_refresh(self, cmd: Command | TypedCommand, work: Callable[[], T]) -> T:
        """Run a command's storage ``work`` in a worker thread and the selected mailbox's refresh right
        after it in the same call: one thread hop per command instead of two. :meth:`updates` then
        reports what that refresh found. Only while no search context or NOTIFY is live (they need
        the view as it was before the refresh), and only for commands that add neither."""
        sel = self.selected
        if sel is None or sel.contexts or self.notify is not None:
            return await asyncio.to_thread(work)
        mb = sel.mailbox
        allow = cmd.uid or cmd.name not in NO_EXPUNGE
        fast = cmd.name in FAST_SYNC

        def both() -> tuple[T, Changes | None]:
            result = work()
            try:
                return result, mb.refresh(allow_expunges=allow, fast=fast)
            except Exception as exc:  # noqa: BLE001 - updates() refreshes again
                log.warning("mailbox refresh failed", mailbox=mb.name, error=repr(exc))
                return result, None

        result, changes = await asyncio.to_thread(both)
        if changes is not None and self.selected is sel:
            self._refreshed = (sel, changes)
        return result

    def note_refreshed(self, changes: Changes) -> None:
        sel = self.selected
        if sel is not None and not sel.contexts and self.notify is None:
            self._refreshed = (sel, changes)

    def report_changes(self, changes: Changes) -> None:
        sel = self.selected
        if sel is None:
            return
        mb = sel.mailbox
        if changes.uidvalidity_changed:
            self.write("* BYE Mailbox UIDVALIDITY changed.")
            self.logout_reason = "UIDVALIDITY changed"
            self.closed = True
            return
        if changes.expunged_uids:
            if self.qresync:
                from dovetail.imap.sequence import format_set

                self.write(f"* VANISHED {format_set(changes.expunged_uids)}")
            else:
                for gone in changes.expunged_seqs:
                    self.write(f"* {gone} EXPUNGE")
            if sel.saved is not None:
                sel.saved = sel.saved - set(changes.expunged_uids)
        if changes.new_uids or changes.expunged_uids:
            self.write(f"* {mb.exists} EXISTS")
            if changes.new_uids and not self.rev2:
                self.write(f"* {mb.recent_count} RECENT")
        watch = self.notify.selected if self.notify is not None else None
        flag_changes = changes.flag_changes if watch is None or "FlagChange" in watch.events else []
        if not flag_changes:
            self.announce_keywords()
            return
        # Another session's STORE over many messages reaches every session of the folder: one format
        # per command, and the lines written at once.
        lines = []
        seq_of = mb.seq_of
        flags_out = self.flags_out
        if self.condstore:
            for st in flag_changes:
                seq = seq_of(st.uid)
                if seq is not None:
                    lines.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))"
                                 % (seq, st.uid, flags_out(st.flags, st.recent), st.modseq))
        else:
            for st in flag_changes:
                seq = seq_of(st.uid)
                if seq is not None:
                    lines.append(b"* %d FETCH (UID %d FLAGS %s)" % (seq, st.uid, flags_out(st.flags, st.recent)))
        self.announce_keywords()
        if lines:
            self.write(b"\r\n".join(lines))

    # -- capability / any state -------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPS)
        if self.state is State.NOT_AUTHENTICATED:
            if self.conn.starttls_available and not self.conn.tls:
                caps.append("STARTTLS")
            if self.conn.secure:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += AUTH_CAPS
            caps.append(f"APPENDLIMIT={self.limits.max_literal}")
        return caps

    async def cmd_capability(self, cmd: Command) -> tuple[str | None, str]:
        _no_args(cmd)
        self.write("* CAPABILITY " + " ".join(self.capabilities()))
        return None, "Capability completed."

    async def cmd_noop(self, cmd: Command) -> tuple[str | None, str]:
        _no_args(cmd)
        return None, "NOOP completed."

    async def cmd_logout(self, cmd: Command) -> None:
        _no_args(cmd)
        self.write("* BYE Logging out")
        self._tagged(cmd.tag, "OK", "Logout completed.")
        self.state = State.LOGOUT
        self.closed = True

    async def cmd_id(self, cmd: Command) -> tuple[str | None, str]:
        if len(cmd.args) != 1:
            raise ParseError("ID takes one argument")
        fields = _id_fields(cmd.args[0])
        if "x-proxy-ttl" in fields and self.homes is not None and self.state is State.NOT_AUTHENTICATED:
            await self._take_forwarding(fields)
        self.write(f'* ID ("name" "{self.server_name}")')
        return None, "ID completed."

    async def cmd_compress(self, cmd: Command) -> tuple[str | None, str]:
        if len(cmd.args) != 1 or not isinstance(cmd.args[0], Atom):
            raise ParseError("COMPRESS needs a mechanism")
        if cmd.args[0].value.upper() != "DEFLATE":
            raise CommandError("Unknown compression mechanism.", status="BAD")
        if self._inflate is not None:
            raise CommandError("Compression is already active.", "COMPRESSIONACTIVE")
        self._deflate_next = True
        return None, "Begin compression."

    async def cmd_starttls(self, cmd: Command) -> None:
        _no_args(cmd)
        if not self.conn.starttls_available:
            raise CommandError("TLS support isn't enabled.", status="BAD")
        if self.conn.tls:
            raise CommandError("TLS is already active.", status="BAD")
        self._tagged(cmd.tag, "OK", "Begin TLS negotiation now.")
        self.starttls_requested = True

    async def _take_forwarding(self, fields: dict[str, str]) -> None:
        """A node proxying a client here names the client and the hops left (Dovecot's ``x-originating-ip``,
        ``x-originating-port`` and ``x-proxy-ttl``); believed only from a node's address, as Dovecot believes
        them only from ``login_trusted_networks``."""
        assert self.homes is not None
        node_ip = self.conn.remote_ip
        if not await asyncio.to_thread(self.homes.is_node_address, node_ip):
            log.info(f"ID forwarding ignored: rip={node_ip} is not a node address")
            return
        try:
            ip = str(ipaddress.ip_address(fields.get("x-originating-ip", node_ip)))
            port = int(fields.get("x-originating-port", "0"))
            ttl = int(fields["x-proxy-ttl"])
        except ValueError:
            log.warning(f"ID forwarding ignored: malformed fields from node rip={node_ip}")
            return
        self.forwarded_by = node_ip
        self.conn.remote_ip, self.conn.remote_port = ip, port
        self.hops_left = max(0, min(ttl, proxytoken.DEFAULT_TTL))

    # -- authentication ---------------------------------------------------------------------------------

    async def cmd_login(self, cmd: Command) -> tuple[str | None, str] | None:
        if len(cmd.args) != 2:
            raise ParseError("LOGIN needs a user name and a password")
        user = astring(cmd.args[0]).decode("utf-8", "replace")
        password = astring(cmd.args[1]).decode("utf-8", "replace")
        if proxytoken.is_token(password):
            await self._proxied_login(cmd.tag, user, password)
            return None
        if not self.conn.secure:
            self.write("* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS.")
            raise CommandError("Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                               "PRIVACYREQUIRED")
        await self._login(cmd.tag, user, password, "LOGIN")
        return None

    async def cmd_authenticate(self, cmd: Command) -> None:
        if not cmd.args or not isinstance(cmd.args[0], Atom):
            raise ParseError("AUTHENTICATE needs a mechanism")
        mech = cmd.args[0].value.upper()
        if mech not in MECHANISMS:
            raise CommandError("Unsupported authentication mechanism.")
        if not self.conn.secure:
            raise CommandError("Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                               "PRIVACYREQUIRED")
        if len(cmd.args) > 2:
            raise ParseError("Too many arguments")
        initial = None
        if len(cmd.args) == 2:  # SASL-IR
            if not isinstance(cmd.args[1], Atom | String):
                raise ParseError("Invalid initial response")
            initial = astring(cmd.args[1])
        exchange = SaslExchange()
        await self._sasl_step(cmd.tag, exchange, exchange.start(mech, initial), initial is not None)

    async def _line(self, ev: Line) -> None:
        if self.idling:
            tag = self.idling
            self.idling = None
            if ev.too_long or ev.data.strip().upper() != b"DONE":
                self._bad(tag, "Expected DONE.")
                return
            self._tagged(tag, "OK", "Idle completed.")
            return
        if self._sasl is not None:
            (tag, exchange), self._sasl = self._sasl, None
            if ev.too_long:
                self._bad(tag, "Authentication response too long")
                return
            await self._sasl_step(tag, exchange, exchange.receive(ev.data), False)
            return
        self._bad("*", "Unexpected line")

    async def _sasl_step(self, tag: str, exchange: SaslExchange, step: Step, initial: bool) -> None:
        """Answer one step of the SASL exchange (:mod:`dovetail.mailauth.sasl`)."""
        if isinstance(step, Challenge):
            self._sasl = (tag, exchange)
            self.write("+ " + step.base64)
            self.parser.expect_line()
        elif isinstance(step, Credentials):
            await self._login(tag, step.authcid, step.password, step.mechanism)
        elif step.reason is Reason.AUTHZID:
            # Refused before any password check and counted as a failed login, as Dovecot does; Dovecot 2.3
            # says [AUTHENTICATIONFAILED], RFC 5530's [AUTHORIZATIONFAILED] tells the client why.
            mech = exchange.mechanism.name if exchange.mechanism else "PLAIN"
            await self._refuse(tag, step.authcid, mech, "AUTHORIZATIONFAILED",
                               "Authorization as another user is not allowed.")
        elif step.reason is Reason.UNSUPPORTED:
            self._tagged(tag, "NO", "Unsupported authentication mechanism.")
        elif step.reason in (Reason.BAD_BASE64, Reason.BAD_UTF8):
            self._bad(tag, "Invalid base64 data in " + ("initial response" if initial else "continued response"))
        else:
            self._bad(tag, step.text + ".")

    async def _login(self, tag: str, user: str, password: str, method: str) -> None:
        ip = self.conn.remote_ip
        failures = 0
        if len(user) > 255 or len(password) > 1024:
            account = None
        elif (failures := await asyncio.to_thread(self.penalty.failures, user, ip)) >= self.penalty.lockout:
            # (the ledger may be a shared file: off the event loop)
            log.info(f"Login refused: user=<{user}>, method={method}, rip={ip}, too many failures")
            self._tagged(tag, "NO", "Too many failed logins, try again later.", "UNAVAILABLE")
            await self._after_failure()
            return
        else:
            account = await self.authenticator.authenticate(user, password, ip)
        if account is None:
            await self._refuse(tag, user, method, "AUTHENTICATIONFAILED", "Authentication failed.")
            return
        if failures:  # none counted before the check: nothing to clear (a failure since is left to age out)
            await asyncio.to_thread(self.penalty.record_success, user, ip)
        await self._serve(tag, account, method)

    async def _proxied_login(self, tag: str, user: str, token: str) -> None:
        """A login another node checked and proxied here: trusted only from a node's address, after its ``ID``,
        with a token signed under this node's ``cluster.secret``; no password check here."""
        if self.forwarded_by is None or self.homes is None:
            await self._refuse(tag, user, "proxy", "AUTHENTICATIONFAILED",
                               "Proxied login refused: not from a node of the cluster.")
            return
        grant = proxytoken.Grant(user, self.conn.remote_ip, self.conn.remote_port, self.hops_left)
        why = await asyncio.to_thread(self.homes.check_token, grant, token)  # remembers the token: a file
        if why is not None:
            log.error(f"Proxied login refused: user=<{user}>, node={self.forwarded_by}, rip={self.conn.remote_ip}: "
                      f"{why}")
            self._tagged(tag, "NO", f"Proxied login refused: {why}.", "UNAVAILABLE")
            return
        lookup = getattr(self.authenticator, "lookup", None)  # an AccountLookup (mailauth.accounts)
        account = await lookup(user) if lookup is not None else None
        if account is None:
            self._tagged(tag, "NO", "Authentication failed.", "AUTHENTICATIONFAILED")
            return
        await self._serve(tag, account, "proxy")

    async def _serve(self, tag: str, account: Account, method: str) -> None:
        """A checked login: served here, or handed to the account's home node (``proxy_requested``)."""
        ip = self.conn.remote_ip
        if account.unavailable:
            log.info(f"Login refused: user=<{account.username}>, method={method}, rip={ip}, {account.unavailable}")
            self._tagged(tag, "NO", account.unavailable, "UNAVAILABLE")
            return
        route = await asyncio.to_thread(self.homes.route, account) if self.homes is not None else None
        if isinstance(route, Refusal):
            log.error(f"Login refused: user=<{account.username}>, rip={ip}: {route.text}")
            self._tagged(tag, "NO", f"Mailbox unavailable: {route.text}.", "UNAVAILABLE")
            return
        if isinstance(route, Route):
            ttl = self.hops_left - 1
            if ttl < 1:
                text = f"Proxy loop: hop count exhausted on the way to node {route.node} ({route.address})"
                log.error(f"Login refused: user=<{account.username}>, rip={ip}: {text}")
                self._tagged(tag, "NO", text + ".", "UNAVAILABLE")
                return
            assert self.homes is not None
            grant = proxytoken.Grant(account.username, ip, self.conn.remote_port, ttl)
            self.proxy_requested = ProxyRequest(tag, method, route, grant, proxytoken.sign(self.homes.secret, grant),
                                                (self.conn.local_ip, self.conn.local_port))
            return
        try:
            storage = await asyncio.to_thread(self._open_storage, account)
        except Exception as exc:  # noqa: BLE001
            log.exception("mail storage unavailable", user=account.username, error=repr(exc))
            self._tagged(tag, "NO", "Mailbox storage unavailable.", "UNAVAILABLE")
            return
        if storage is None:
            self._tagged(tag, "NO", "Maximum number of connections from user exceeded.", "LIMIT")
            return
        self._user_slot = account.username
        self.account = account
        self.storage = storage
        self.state = State.AUTHENTICATED
        self.parser.authenticated = True
        log.info(f"Login: user=<{account.username}>, method={method}, rip={ip}, lip={self.conn.local_ip}, "
                 f"mpid={os.getpid()}" + (", TLS" if self.conn.tls else ""))
        self._tagged(tag, "OK", "Logged in", "CAPABILITY " + " ".join(self.capabilities()))

    def _open_storage(self, account: Account) -> MailStorage | None:
        """The user's connection slot and storage, in one trip to the storage thread: None when the user
        has no slot left; the slot is given back when the storage cannot be opened."""
        if not self.users.acquire(account.username):
            return None
        try:
            return self.storage_factory(account)
        except BaseException:
            self.users.release(account.username)
            raise

    async def _refuse(self, tag: str, user: str, method: str, code: str, text: str) -> None:
        """A failed login: counted in the penalty and answered after its delay."""
        ip = self.conn.remote_ip
        delay = await asyncio.to_thread(self.penalty.record_failure, user, ip)
        await asyncio.sleep(delay)
        log.info(f"Aborted login (auth failed): user=<{user}>, method={method}, rip={ip}, "
                 f"lip={self.conn.local_ip}")
        self._tagged(tag, "NO", text, code)
        await self._after_failure()

    async def _after_failure(self) -> None:
        self.auth_failures += 1
        if self.auth_failures >= self.limits.max_auth_attempts:
            self.write("* BYE Too many failed logins.")
            self.logout_reason = "Too many failed logins"
            self.closed = True

    # -- proxying (the adapter reports how the hand-over went) -----------------------------------------

    def proxy_failed(self, text: str) -> None:
        """The home node could not be reached or refused: the client's login fails, the session stays."""
        req = self.proxy_requested
        assert req is not None
        self.proxy_requested = None
        log.error(f"Proxy failed: user=<{req.grant.user}>, rip={self.conn.remote_ip}, "
                  f"node={req.route.node} ({req.route.address}): {text}")
        self._tagged(req.tag, "NO", text if text.endswith(".") else text + ".", "UNAVAILABLE")

    def proxy_started(self, capabilities: str) -> bytes:
        """The home node took the login: the client's OK carries its CAPABILITY; returns the client's bytes
        already received past the login command (they belong to the home node now)."""
        req = self.proxy_requested
        assert req is not None
        self.proxy_requested = None
        self.proxied_to = req.route.node
        self.state = State.AUTHENTICATED
        log.info(f"Login: user=<{req.grant.user}>, method={req.method}, rip={self.conn.remote_ip}, "
                 f"lip={self.conn.local_ip}, proxy={req.route.node} ({req.route.address})"
                 + (", TLS" if self.conn.tls else ""))
        self._tagged(req.tag, "OK", "Logged in", f"CAPABILITY {capabilities}" if capabilities else None)
        self.closed = True  # the session's part is over: bytes flow between client and home node
        return self.parser.take_buffer()

    # -- authenticated state basics --------------------------------------------------------------------

    async def cmd_enable(self, cmd: Command) -> tuple[str | None, str]:
        if not cmd.args:
            raise ParseError("ENABLE needs capabilities")
        newly = []
        for tok in cmd.args:
            name = _atom(tok).upper()
            if name in ("CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT") and name not in self.enabled:
                self.enabled.add(name)
                newly.append(name)
                if name == "QRESYNC" and "CONDSTORE" not in self.enabled:
                    self.enabled.add("CONDSTORE")
        if newly:
            self.write("* ENABLED " + " ".join("IMAP4rev2" if n == "IMAP4REV2" else n for n in newly))
        return None, "Enabled."

    async def cmd_namespace(self, cmd: Command) -> tuple[str | None, str]:
        _no_args(cmd)
        self.write('* NAMESPACE (("" "/")) NIL NIL')
        return None, "Namespace completed."

    async def cmd_unauthenticate(self, cmd: Command) -> tuple[str | None, str]:
        _no_args(cmd)
        await self.unselect()
        if self._user_slot:
            await asyncio.to_thread(self.users.release, self._user_slot)
            self._user_slot = None
        self.account = None
        self.storage = None
        self.enabled.clear()
        self.state = State.NOT_AUTHENTICATED
        self.parser.authenticated = False
        return None, "Unauthenticate completed."

    async def cmd_idle(self, cmd: Command) -> None:
        _no_args(cmd)
        await self._ensure_watcher()  # before the refresh, so nothing slips between the two
        await self.updates(None)
        self.write("+ idling")
        self.idling = cmd.tag
        self._idle_started = self._idle_refreshed = time.monotonic()
        self.parser.expect_line()

    async def _ensure_watcher(self) -> None:
        sel = self.selected
        if sel is None or sel.watcher is not None:
            return
        try:
            sel.watcher = await asyncio.to_thread(sel.mailbox.watch)
        except Exception:  # noqa: BLE001 - polling still works
            sel.watcher = False

    async def idle_wait(self) -> bool:
        """Wait for a hint that the selected mailbox changed.

        With a working watcher the wait lasts until the hint (or until the next safety refresh, every
        ``IDLE_SAFETY_REFRESH`` seconds in case a hint was lost), so an idle session does no work;
        without one every ``limits.idle_poll`` seconds ends in a refresh (polling).
        """
        sel = self.selected
        others = self.notify is not None and bool(self.notify.others)
        if sel is None:
            await asyncio.sleep(notify.POLL_SECONDS if others else self.limits.idle_poll)
            return others
        if others:  # NOTIFY watches other mailboxes too: look at them every couple of seconds
            if sel.watcher is None:
                await self._ensure_watcher()
            if sel.watcher:
                with contextlib.suppress(Exception):
                    await sel.watcher.wait_async(notify.POLL_SECONDS)
                return True
            await asyncio.sleep(notify.POLL_SECONDS)
            return True
        await self._ensure_watcher()
        if sel.watcher:
            try:
                left = max(IDLE_SAFETY_REFRESH - (time.monotonic() - self._idle_refreshed), self.limits.idle_poll)
                recheck = sel.mailbox.recheck_in()
                if recheck is not None and recheck < left:
                    # A change by another writer may hide behind the directory's timestamp until then.
                    await sel.watcher.wait_async(recheck + 0.01)
                    return True
                if await sel.watcher.wait_async(left):
                    return True
                return time.monotonic() - self._idle_refreshed >= IDLE_SAFETY_REFRESH
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                sel.watcher = False
        await asyncio.sleep(self.limits.idle_poll)
        return True

    async def idle_refresh(self) -> None:
        """Send the untagged updates an IDLE client waits for."""
        if self.idling and (self.selected is not None or self.notify is not None):
            self._idle_refreshed = time.monotonic()
            await self.updates(None)

    async def unselect(self) -> None:
        mailbox = self.detach_selected()
        if mailbox is not None:
            await asyncio.to_thread(mailbox.close)

    def detach_selected(self) -> Any:
        """Leave the selected mailbox (back to the authenticated state) and hand back its view, which
        the caller closes in its own storage call (SELECT: in the same thread call that opens the next
        one); None when nothing was selected."""
        sel = self.selected
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        if sel is None:
            return None
        if sel.watcher:
            try:
                sel.watcher.close()
            except Exception:  # noqa: BLE001
                pass
        return sel.mailbox


def _id_fields(tok: Any) -> dict[str, str]:
    """ID's parameter list as a dict (lower-case keys; NIL values dropped); NIL or junk gives {}."""
    if not isinstance(tok, ListToken):
        return {}
    items = tok.items
    out: dict[str, str] = {}
    for key, value in zip(items[::2], items[1::2], strict=False):
        if isinstance(key, String) and isinstance(value, String | Atom) and not (
                isinstance(value, Atom) and value.upper() == "NIL"):
            out[key.text().lower()] = value.text() if isinstance(value, String) else value.value
    return out


def _no_args(cmd: Command) -> None:
    if cmd.args:
        raise ParseError(f"{cmd.name} takes no arguments")


def _atom(tok: Any) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("Expected an atom")
    return tok.value


_COMMANDS: dict[str, tuple[Callable[..., Any], frozenset[State]]] = {
    "CAPABILITY": (Session.cmd_capability, ANY),
    "NOOP": (Session.cmd_noop, ANY),
    "LOGOUT": (Session.cmd_logout, ANY),
    "ID": (Session.cmd_id, ANY),
    "STARTTLS": (Session.cmd_starttls, NOAUTH),
    "COMPRESS": (Session.cmd_compress, AUTH),
    "LOGIN": (Session.cmd_login, NOAUTH),
    "AUTHENTICATE": (Session.cmd_authenticate, NOAUTH),
    "ENABLE": (Session.cmd_enable, AUTH),
    "NAMESPACE": (Session.cmd_namespace, AUTH),
    "UNAUTHENTICATE": (Session.cmd_unauthenticate, AUTH),
    "IDLE": (Session.cmd_idle, AUTH),
}
_COMMANDS.update(STORAGE_COMMANDS)
_UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"}

__all__ = ["Session", "ConnInfo", "State", "UserRegistry", "CommandError"]
