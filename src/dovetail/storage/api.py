"""The mailbox storage API: what the IMAP server, delivery, quota checks, the web's usage figures
and the replies engine speak to.

This plays the part of Dovecot's lib-storage: the callers know these classes, not the on-disk
format. The Maildir++ implementation lives in :mod:`dovetail.maildir`; obtain one with
:func:`dovetail.storage.open_storage`.

Errors
------
Every :class:`StorageError` has an :class:`ErrorKind` and no protocol in it: the IMAP layer maps kinds
to response codes (``[NONEXISTENT]``, ``[OVERQUOTA]``...), delivery maps ``OVER_QUOTA`` to ``4.2.2``/``5.2.2``.

Threading and blocking
----------------------
Every method of :class:`MailStorage` and :class:`Mailbox` may touch the disk (directory listings,
``fsync``, lock files, the index) and so may block; an asyncio server runs them with
``asyncio.to_thread``. Calls on cached data (``Mailbox.uids``, ``uidnext``, ``seq_of``...) are pure
memory reads and never block. A :class:`Mailbox` is one session's view: use it from one thread at a time.
Many views, in one or many processes, and foreign writers (Dovecot, Postfix's virtual(8), our own
delivery agent) may work on the same Maildir at once; each view sees the others' work on ``refresh()``.

Flags
-----
Flags are IMAP strings: system flags with their backslash (``\\Seen``), keywords as they are
(``$Forwarded``, ``Junk``). ``\\Recent`` is never stored or accepted in a flag set; it is reported by
:attr:`MessageInfo.recent`.

Names
-----
Mailbox names are the IMAP names as the client sees them, decoded from modified UTF-7 (RFC 3501 5.1.3)
to ``str``, with ``/`` as the hierarchy separator. ``INBOX`` is case-insensitive. Encoding to wire
mUTF-7 is the IMAP layer's job (:func:`dovetail.storage.names.encode_mutf7` helps).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

# --- errors: each carries a kind; protocols map kinds to their own codes --------------------------


class ErrorKind(enum.Enum):
    """What went wrong, independent of any protocol: ``dovetail.imap.storage_errors`` maps a kind to an
    IMAP response code, delivery maps ``OVER_QUOTA`` to an SMTP/DSN status."""

    NOT_FOUND = "not found"
    EXISTS = "exists"
    NOT_ALLOWED = "not allowed"
    INVALID_NAME = "invalid name"
    EXPUNGED = "expunged"
    IN_USE = "in use"
    READ_ONLY = "read-only"
    TOO_LARGE = "too large"
    INVALID_FLAG = "invalid flag"
    INVALID_SECTION = "invalid section"
    OVER_QUOTA = "over quota"
    SERVER_BUG = "server bug"


class StorageError(Exception):
    """Base class; ``kind`` says what went wrong (``SERVER_BUG`` when nothing more precise is known)."""

    kind: ErrorKind = ErrorKind.SERVER_BUG


class InvalidMailboxName(StorageError):
    """The name is not acceptable (path tricks, control chars, empty parts, too long)."""

    kind = ErrorKind.INVALID_NAME


class MailboxNotFound(StorageError):
    """No such mailbox."""

    kind = ErrorKind.NOT_FOUND


class MailboxExists(StorageError):
    """CREATE or RENAME onto an existing name."""

    kind = ErrorKind.EXISTS


class MailboxNotAllowed(StorageError):
    """Not allowed on this mailbox (delete INBOX, delete with children...)."""

    kind = ErrorKind.NOT_ALLOWED


class MessageExpunged(StorageError):
    """The message file is gone (another writer expunged it): missing message."""

    kind = ErrorKind.EXPUNGED


class MailboxInUse(StorageError):
    """A lock (e.g. ``dovecot-uidlist.lock``) could not be taken in time."""

    kind = ErrorKind.IN_USE


class ReadOnlyMailbox(StorageError):
    """A write on a mailbox opened with ``readonly=True`` (EXAMINE)."""

    kind = ErrorKind.READ_ONLY


class MessageTooLarge(StorageError):
    """APPEND data over the configured limit."""

    kind = ErrorKind.TOO_LARGE


class InvalidFlag(StorageError):
    """A flag that is neither a system flag nor a valid keyword (STORE/APPEND/deliver)."""

    kind = ErrorKind.INVALID_FLAG


class InvalidSection(StorageError):
    """A BODY[...] section spec that does not parse."""

    kind = ErrorKind.INVALID_SECTION


class OverQuota(StorageError):
    """The mailbox has no room for the message: ``used`` bytes stored of ``limit``."""

    kind = ErrorKind.OVER_QUOTA

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"mailbox full: {used} of {limit} bytes used")
        self.used = used
        self.limit = limit


class DiskFull(StorageError):
    """The disk (or the system's disk quota) has no room for new mail: nothing was stored. Mail already
    stored stays readable and changeable. IMAP answers ``NO [OVERQUOTA]``, as Dovecot does."""

    kind = ErrorKind.OVER_QUOTA

    def __init__(self, text: str = "Not enough disk space") -> None:
        super().__init__(text)


class NotInMemory(Exception):  # noqa: N818 - a signal to fall back, not an error anyone sees
    """A read made inside :meth:`Mailbox.memory_reads` needs the disk or the index: the caller makes it
    again the ordinary way (in a worker thread). Never reaches a client."""


# --- flags -------------------------------------------------------------------------------------

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
RECENT = "\\Recent"
SYSTEM_FLAGS: frozenset[str] = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT})

#: Special-use attributes (RFC 6154) and the folder names ``ensure_special_use()`` creates for them.
SPECIAL_USE_FOLDERS: dict[str, str] = {
    "\\Sent": "Sent",
    "\\Drafts": "Drafts",
    "\\Trash": "Trash",
    "\\Junk": "Junk",
    "\\Archive": "Archive",
}

#: STATUS items understood by :meth:`MailStorage.status`.
STATUS_ITEMS: frozenset[str] = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "HIGHESTMODSEQ", "SIZE"}
)


class StoreMode(enum.Enum):
    """STORE FLAGS / +FLAGS / -FLAGS."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """One LIST answer line.

    ``attributes`` holds the RFC 3501/5258/6154 attributes: ``\\HasChildren``/``\\HasNoChildren``,
    ``\\Noselect`` (a parent that exists only as a hierarchy level), ``\\Subscribed`` and the special-use
    attribute (``\\Sent``...) when known. ``special_use`` repeats the latter for convenience.
    """

    name: str
    delimiter: str = "/"
    attributes: frozenset[str] = frozenset()
    special_use: str | None = None


class FlagState(NamedTuple):
    """Flags of one message after a change, as a STORE or an unsolicited FETCH reports them.

    ``flags`` holds system flags and keywords (everything FETCH FLAGS shows but ``\\Recent``);
    ``keywords`` is the keyword subset. A named tuple rather than a frozen dataclass: one is made per
    changed message for the session that changed it and for every other session of the folder, and
    a frozen dataclass's constructor costs twice as much.
    """

    uid: int
    flags: frozenset[str]
    keywords: frozenset[str]
    modseq: int
    recent: bool = False


@dataclass(slots=True)
class MessageInfo:
    """Everything FETCH can answer without reading the message file (served from the index).

    Read-only by convention, not frozen: FETCH 1:* builds one per message, and a frozen dataclass's
    ``__init__`` costs a call per field.

    ``size`` is RFC822.SIZE: the size with CRLF line endings. ``envelope`` and ``bodystructure`` are
    IMAP-ready nested lists/str/int/None (serialise with :func:`dovetail.mime.imapdata.to_imap`);
    ``bodystructure`` is the extensible form (BODYSTRUCTURE); ``body`` the non-extensible form (BODY).
    They are ``None`` when the caller asked ``fetch_info`` not to load them. With
    ``fetch_info(..., raw=True)`` the ``*_imap`` fields hold the same data already serialised as IMAP
    text (what FETCH sends after ``ENVELOPE ``/``BODYSTRUCTURE ``/``BODY ``) and the lists stay None:
    the fast path for large FETCHes.
    """

    uid: int
    flags: frozenset[str]
    keywords: frozenset[str]
    internal_date: datetime
    size: int
    modseq: int
    recent: bool = False
    envelope: list[Any] | None = None
    bodystructure: list[Any] | None = None
    body: list[Any] | None = None
    envelope_imap: bytes | None = None
    bodystructure_imap: bytes | None = None
    body_imap: bytes | None = None

    @property
    def imap_flags(self) -> frozenset[str]:
        """The FLAGS list the IMAP server sends, with ``\\Recent`` added when it applies."""
        return self.flags | {RECENT} if self.recent else self.flags


@dataclass(slots=True)
class Changes:
    """What ``Mailbox.refresh()`` found since the previous refresh (or since select).

    ``expunged_seqs`` are sequence numbers in the view *before* this refresh, in descending order, so
    the IMAP server can send ``* n EXPUNGE`` for each in turn as given. ``new_uids`` were appended
    to the view (``* EXISTS`` with the new count). ``flag_changes`` are messages whose flags changed
    by another view or writer (changes this view made itself with ``store_flags`` are not repeated).
    ``uidvalidity_changed`` means the mailbox was recreated: the IMAP server must drop the client
    (``* BYE``) as RFC 3501 requires.
    """

    new_uids: list[int] = field(default_factory=list)
    expunged_uids: list[int] = field(default_factory=list)
    expunged_seqs: list[int] = field(default_factory=list)
    flag_changes: list[FlagState] = field(default_factory=list)
    recent_count: int = 0
    uidvalidity_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.new_uids or self.expunged_uids or self.flag_changes or self.uidvalidity_changed)


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Result of ``store_flags``: the new state of the changed messages, and the UIDs that failed the
    CONDSTORE ``UNCHANGEDSINCE`` test (RFC 7162 ``[MODIFIED ...]``)."""

    changed: list[FlagState]
    modified: list[int]


@dataclass(frozen=True, slots=True)
class CopyResult:
    """COPYUID/APPENDUID data (RFC 4315): destination UIDVALIDITY and source UID -> destination UID."""

    uidvalidity: int
    uid_map: dict[int, int]


@dataclass(frozen=True, slots=True)
class Section:
    """A parsed BODY[...] section spec.

    ``part`` is the dotted part path (``(1, 2)`` for ``1.2``; ``()`` for the whole message); ``text``
    is one of ``None`` (the part body, or the whole message when ``part`` is empty), ``"HEADER"``,
    ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``, ``"TEXT"``, ``"MIME"``; ``fields`` the header names
    (upper-cased) for the HEADER.FIELDS forms. Build one with :func:`dovetail.mime.sections.parse_section`.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """What all mailboxes of one user hold: ``bytes`` as stored (what a quota limits) and ``messages``."""

    bytes: int
    messages: int


@dataclass(frozen=True, slots=True)
class DeliveryId:
    """One delivery of a queued message to one of its recipients, the same on every attempt.

    A delivery repeated after a crash (message stored, queue not yet updated) finds the copy of the
    first attempt by it instead of storing a second one.
    """

    queue_id: str
    recipient: int
    arrival: float


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where ``deliver()`` put a message.

    ``key`` names the message for :meth:`MailStorage.read_delivered`; it stays the same when a reader
    changes the message's flags. ``duplicate`` says an earlier attempt had stored it already and
    nothing was written this time.
    """

    mailbox: str
    key: str
    duplicate: bool = False


# --- watching ----------------------------------------------------------------------------------


class MailboxWatcher(Protocol):
    """Tells a selected view that the mailbox may have changed (for IDLE).

    ``wait`` blocks up to ``timeout`` seconds and returns True when something changed on disk (a
    delivery, another session's flags or expunge); ``await wait_async(max_wait)`` is the same for an
    event loop. A True is a hint: call ``Mailbox.refresh()`` to learn what changed. Changes are seen
    within one second.
    """

    def wait(self, timeout: float) -> bool: ...

    async def wait_async(self, max_wait: float) -> bool: ...

    def close(self) -> None: ...


# --- the storage ------------------------------------------------------------------------------


class Mailbox(ABC):
    """One session's selected view of a mailbox (SELECT or EXAMINE).

    The view holds an ordered list of UIDs; sequence number n is ``uids[n - 1]``. It changes only in
    ``refresh()``: messages this view appends, copies in or expunges show up there, like everyone
    else's. Opening a view moves ``new/`` files to ``cur/`` (unless read-only) and gives this session the
    ``\\Recent`` messages.
    """

    name: str
    readonly: bool

    @property
    @abstractmethod
    def uidvalidity(self) -> int: ...

    @property
    @abstractmethod
    def uidnext(self) -> int: ...

    @property
    @abstractmethod
    def highestmodseq(self) -> int: ...

    @property
    @abstractmethod
    def uids(self) -> Sequence[int]:
        """UIDs in the view, ascending; index + 1 is the sequence number."""

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    @abstractmethod
    def recent_count(self) -> int: ...

    @abstractmethod
    def seq_of(self, uid: int) -> int | None:
        """Sequence number of ``uid`` in the view, or None."""

    @abstractmethod
    def first_unseen_seq(self) -> int | None:
        """Sequence number of the first message without ``\\Seen`` (for ``[UNSEEN n]``)."""

    @abstractmethod
    def refresh(self, *, allow_expunges: bool = True, fast: bool = False) -> Changes:
        """Look at the disk and bring the view up to date; report what changed.

        With ``allow_expunges=False`` (during FETCH/STORE/SEARCH, where RFC 3501 forbids EXPUNGE
        responses) vanished messages stay in the view and are reported by a later refresh. With
        ``fast`` (after FETCH, STORE, SEARCH, SORT, THREAD and COPY, as Dovecot's
        ``MAILBOX_SYNC_FLAG_FAST``) the store may skip looking at the disk for changes made by other
        programs when it looked a moment ago; changes of other sessions are reported all the same.
        """

    def command_started(self) -> None:
        """An IMAP command begins (called before it runs): what the store learned of the disk before
        now is no longer current enough for the refresh after this command."""
        return None

    def refresh_if_quiet(self, *, fast: bool = False) -> Changes | None:
        """The (empty) result :meth:`refresh` would give now, when the store can tell cheaply, without
        anything that may block on the disk (a few stats, a read of a shared-memory counter), that nothing
        changed since the previous refresh: the IMAP server then skips the thread a refresh runs in.
        None means "maybe something changed": call :meth:`refresh` (with the same ``fast``)."""
        return None

    def memory_reads(self, *, fast: bool = False) -> AbstractContextManager[Changes] | None:
        """A scope in which this view's reads (:meth:`fetch_info`, :meth:`flag_rows`,
        :meth:`get_section`, :meth:`open_message`) are answered from memory only, raising
        :class:`NotInMemory` instead of touching the disk or the index, so a small FETCH can run on the
        event loop without a thread hop. Entered only when :meth:`refresh_if_quiet` tells that nothing
        changed since the previous refresh; the scope's value is that (empty) refresh result. None:
        the store cannot tell, read the ordinary way."""
        return None

    @abstractmethod
    def fetch_info(
        self,
        uids: Iterable[int],
        *,
        envelope: bool = True,
        bodystructure: bool = True,
        raw: bool = False,
        dates: bool = True,
    ) -> list[MessageInfo]:
        """Index data for ``uids`` that are in the view, in UID order; unknown UIDs are skipped.
        ``raw=True`` gives ENVELOPE/BODY/BODYSTRUCTURE as IMAP bytes instead of lists. With
        ``dates=False`` the caller does not read ``internal_date``, and a store that learns dates
        lazily may leave it at the epoch."""

    def message_facts(self) -> list[tuple[int, frozenset[str], float, int, int, bool]]:
        """``(uid, flags, internal date as POSIX time, size, modseq, recent)`` of every message in the
        view, in UID order: what SEARCH, SORT and THREAD read before any header, without a
        :class:`MessageInfo` per message."""
        return [
            (i.uid, i.flags, i.internal_date.timestamp(), i.size, i.modseq, i.recent)
            for i in self.fetch_info(list(self.uids), envelope=False, bodystructure=False)
        ]

    def flag_rows(self, uids: Iterable[int]) -> list[tuple[int, frozenset[str], bool, int, int]]:
        """``(uid, flags, recent, modseq, size)`` of each of ``uids`` in the view (or still in the
        store's expunge history), in UID order: what ``FETCH (UID FLAGS MODSEQ RFC822.SIZE)`` answers,
        without a :class:`MessageInfo` per message (``UID FETCH 1:* (FLAGS)`` asks for thousands)."""
        return [
            (i.uid, i.flags, i.recent, i.modseq, i.size)
            for i in self.fetch_info(uids, envelope=False, bodystructure=False, dates=False)
        ]

    def header_cache(self) -> dict[tuple[str, int], list[str]] | None:
        """A map ``(lower-case field name, uid) -> field values`` that SEARCH, SORT and THREAD fill and
        read (values are never modified), shared by the views of one mailbox where the store can: a
        message's header never changes under its UID. None: no cache."""
        return None

    @abstractmethod
    def open_message(self, uid: int) -> bytes:
        """The whole message with CRLF line endings, as BODY[] sends it. Raises MessageExpunged."""

    def message_text(self, uid: int) -> str | None:
        """The decoded text of every textual part of the message, as SEARCH TEXT/BODY reads it
        (``dovetail.mime.text.body_text``), when the store keeps it at hand; None means the caller
        decodes :meth:`open_message` itself. Raises MessageExpunged."""
        return None

    def folded_text(self, uid: int) -> str | None:
        """:meth:`message_text` case-folded as SEARCH compares it (``dovetail.mime.text.fold_case``),
        when the store keeps it at hand; None means the caller folds it itself. Raises MessageExpunged."""
        return None

    def text_matches(self, needle: str) -> tuple[set[int], set[int]] | None:
        """``(found, known)`` for a SEARCH TEXT/BODY over many messages: the UIDs whose
        :meth:`folded_text` contains ``needle`` (already folded), among ``known``, the UIDs the store
        could decide that way at once; messages outside ``known`` are read one by one. None: the store
        cannot (the default)."""
        return None

    def text_has(self, uid: int, needle: str) -> bool | None:
        """Whether :meth:`folded_text` of ``uid`` contains ``needle`` (already folded), when the store
        can say so from texts it holds in memory; None: it cannot (the default), ask another way."""
        return None

    def cached_headers(self, uids: Iterable[int]) -> dict[int, bytes]:
        """The header blocks (``BODY[HEADER]``) of ``uids`` that the store keeps at hand, read without
        opening message files; messages left out are read with :meth:`get_section`."""
        return {}

    @abstractmethod
    def get_section(self, uid: int, section: Section | str, partial: tuple[int, int] | None = None) -> bytes:
        """BODY[section]<start.length> as bytes. ``section`` is a :class:`Section` or the text between
        the brackets (``"1.2.MIME"``, ``"HEADER.FIELDS (From To)"``). Raises InvalidSection,
        MessageExpunged. A missing part gives ``b""`` as RFC 3501 asks."""

    @abstractmethod
    def append(
        self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None
    ) -> int:
        """Store a new message in this mailbox; return its UID."""

    @abstractmethod
    def store_flags(
        self,
        uids: Iterable[int],
        mode: StoreMode,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> StoreResult:
        """Change flags (system flags and keywords together) of messages in the view."""

    @abstractmethod
    def copy(self, uids: Iterable[int], dest: str) -> CopyResult:
        """Copy messages to mailbox ``dest`` (hard link when possible). Raises MailboxNotFound."""

    @abstractmethod
    def move(self, uids: Iterable[int], dest: str) -> CopyResult:
        """Copy then expunge from this mailbox (RFC 6851); the expunges show up on the next refresh."""

    @abstractmethod
    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove messages flagged ``\\Deleted`` (only those in ``uids`` when given: UID EXPUNGE).
        Returns the UIDs removed; the view drops them on the next refresh."""

    @abstractmethod
    def expunged_since(self, modseq: int) -> list[int] | None:
        """UIDs expunged after ``modseq`` for QRESYNC VANISHED (EARLIER); None when the bounded
        history does not reach back that far (the caller then reports all UIDs it cannot vouch for)."""

    @abstractmethod
    def changed_since(self, modseq: int) -> list[int]:
        """UIDs in the view whose modseq is greater than ``modseq`` (CHANGEDSINCE)."""

    @abstractmethod
    def watch(self) -> MailboxWatcher:
        """A watcher for IDLE: inotify on Linux, mtime polling elsewhere."""

    def recheck_in(self) -> float | None:
        """Seconds after which ``refresh()`` should run even without a hint from the watcher (a change
        by another writer may hide behind a file system timestamp until then); None: no need."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the view (and its watcher, index handles)."""

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MailStorage(ABC):
    """All mailboxes of one user (a Maildir++ root)."""

    delimiter: str = "/"

    @abstractmethod
    def list_mailboxes(self, reference: str = "", pattern: str = "*") -> list[MailboxInfo]:
        """LIST: mailboxes matching the IMAP pattern (``*`` any, ``%`` any but the delimiter),
        INBOX first, parents without a folder of their own as ``\\Noselect``."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def create(self, name: str, special_use: str | None = None) -> None:
        """CREATE (with RFC 6154 USE when ``special_use`` is given). Raises MailboxExists,
        InvalidMailboxName."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """DELETE. INBOX cannot be deleted; a mailbox with children is refused (MailboxNotAllowed)."""

    @abstractmethod
    def rename(self, old: str, new: str) -> None:
        """RENAME, children included. Renaming INBOX moves its messages into a new mailbox and leaves
        INBOX empty (RFC 3501 6.3.5)."""

    @abstractmethod
    def subscribe(self, name: str) -> None: ...

    @abstractmethod
    def unsubscribe(self, name: str) -> None: ...

    @abstractmethod
    def list_subscribed(self, pattern: str = "*") -> list[str]: ...

    @abstractmethod
    def special_use(self, name: str) -> str | None:
        """The special-use attribute of ``name`` (``\\Sent``...) or None."""

    @abstractmethod
    def ensure_special_use(self) -> None:
        """Create (and subscribe) Sent, Drafts, Trash, Junk and Archive when missing."""

    @abstractmethod
    def status(self, name: str, items: Iterable[str]) -> dict[str, int]:
        """STATUS items (see STATUS_ITEMS) from the index and a directory listing, without selecting
        and without reading messages. Keys are the upper-case item names."""

    @abstractmethod
    def select(self, name: str, *, readonly: bool = False) -> Mailbox:
        """SELECT (or EXAMINE with ``readonly=True``). Raises MailboxNotFound."""

    @abstractmethod
    def append(
        self, name: str, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None
    ) -> CopyResult:
        """APPEND to ``name`` without selecting it. Returns APPENDUID data (uid_map ``{0: uid}``).
        Raises MailboxNotFound (IMAP: ``[TRYCREATE]``), MessageTooLarge."""

    # --- delivery and quota ----------------------------------------------------------------------

    @abstractmethod
    def deliver(
        self,
        chunks: Iterable[bytes],
        *,
        mailbox: str = "INBOX",
        flags: Iterable[str] = (),
        delivery_id: DeliveryId | None = None,
        retry: bool = False,
        quota: int | None = None,
        size: int = 0,
    ) -> Delivered:
        """Store a message from a delivery agent (virtual(8), LDA, LMTP): on stable storage when this
        returns, without selecting the mailbox; a session sees it on its next ``refresh()``.

        ``chunks`` is the message, with CRLF or LF line endings. ``flags`` go with it (the message is
        then not ``\\Recent``-new but already seen by the store, as Dovecot's LDA does for flags).
        With ``delivery_id`` a second delivery of the same id stores nothing and returns the first
        copy with ``duplicate=True``; ``retry=True`` (a later attempt) also finds a copy that a reader
        has since moved or flagged, at the cost of a listing. With a ``quota`` in bytes (None or 0:
        none) raises :class:`OverQuota` when ``size`` more bytes do not fit. Raises MailboxNotFound,
        InvalidFlag, OverQuota and OSError (disk full...).
        """

    @abstractmethod
    def delivered(self, delivery_id: DeliveryId, mailbox: str = "INBOX") -> Delivered | None:
        """The copy an earlier ``deliver()`` with this id stored, or None."""

    @abstractmethod
    def read_delivered(self, key: str, mailbox: str = "INBOX", limit: int | None = None) -> bytes | None:
        """The bytes of a delivered message as stored (up to ``limit``), by ``Delivered.key``; None when
        it is gone. ``key`` is checked: it cannot name anything outside the mailbox."""

    @abstractmethod
    def usage(self) -> Usage:
        """Bytes and messages of all mailboxes, cheap enough to ask for every delivery and RCPT."""

    def check_quota(self, limit: int | None, incoming: int = 0) -> None:
        """Raise :class:`OverQuota` when ``incoming`` more bytes would take the mailboxes over ``limit``
        bytes (None or 0: no limit)."""
        if not limit:
            return
        used = self.usage().bytes
        if used + incoming > limit:
            raise OverQuota(used, limit)
