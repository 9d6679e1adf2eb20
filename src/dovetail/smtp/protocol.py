"""Sans-I/O SMTP server core, in the style of h11: bytes in, events out, replies to bytes.

Hand-written rather than built on aiosmtpd: aiosmtpd has no PIPELINING, CHUNKING or DSN, buffers DATA
line by line and holds the whole message in memory, which is slow on large messages. aiosmtpd is
kept only as a test peer (a server for testing SMTP clients), never as Dovetail's listener.
This core streams DATA in bounded chunks with dot-unstuffing done on whole blocks (C-speed
``bytes.find``), and keeps no socket: the asyncio adapter is ``server.py``.

Usage: ``receive_data(bytes)``; loop ``next_event()`` until ``NeedData``; answer every event whose
``needs_reply`` is true with ``send_reply(reply)`` (``default_reply(event)`` gives the standard answer
for commands that need no policy). With ``lmtp=True`` the same core speaks LMTP (RFC 2033): LHLO
instead of HELO/EHLO, and the end of the message data is answered with one reply per accepted
recipient (``send_replies``; ``send_reply`` there repeats one reply for every recipient). The core
learns the outcome of MAIL, RCPT, DATA, STARTTLS and AUTH from the reply code it is asked to send,
so policy stays outside. AUTH's SASL exchange (challenges, base64, cancel, the authorization-identity
rule) runs here through :mod:`dovetail.mailauth.sasl`, the
one IMAP uses too; the backend sees only the final credentials.
"""

from __future__ import annotations

import re
from enum import Enum

from dovetail.mailauth.sasl import Challenge, Credentials, Reason, SaslExchange, Step
from dovetail.smtp import events as ev
from dovetail.smtp.address import AddressError, mail_params, parse_params, parse_path, rcpt_params
from dovetail.smtp.limits import Limits
from dovetail.smtp.reply import Reply

_BARE_LF = re.compile(rb"(?<!\r)\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # one C-level scan per command line, not a Python loop per character
_JUNK = (ev.Noop, ev.Rset, ev.Vrfy, ev.Help)
_OK = Reply(250, "2.0.0", "Ok")
_BYE = Reply(221, "2.0.0", "Bye")
_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
_MAIL_OK = Reply(250, "2.1.0", "Ok")
_RCPT_OK = Reply(250, "2.1.5", "Ok")
_HELP = "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"
_LMTP_HELP = "Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"


class State(Enum):
    INIT = "init"  # no HELO/EHLO yet (also right after STARTTLS)
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # receiving DATA content
    BDAT = "bdat"  # receiving a BDAT chunk
    CLOSED = "closed"


class SmtpConnection:
    """One SMTP session's protocol state; feed it bytes, take events, hand it replies."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        tls_available: bool = False,
        auth_available: bool = False,
        hostname: str = "localhost",
        tls_active: bool = False,
        auth_plaintext: bool = False,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        lmtp: bool = False,
    ) -> None:
        self.lmtp = lmtp
        self.limits = limits or Limits()
        self.error_limit = self.limits.max_errors  # lowered by the server while it is under stress
        self.hostname = hostname
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.auth_available = auth_available
        self.auth_plaintext = auth_plaintext
        self.auth_mechanisms = auth_mechanisms
        self.state = State.INIT
        self.esmtp = False
        self.authenticated = False
        self.closing = False
        self.errors = 0
        self.junk = 0
        self._buf = bytearray()
        self._pending: ev.Event | None = None
        self._skip_long_line = False
        self._sasl: SaslExchange | None = None  # an exchange waiting for the client's next line
        self.last_verb = ""  # lower-case verb of the last command line read ("unknown" if not one)
        self._per_recipient = 0  # LMTP: replies the pending end-of-data event takes (one per recipient)
        self._reset_transaction()

    # -- public API ------------------------------------------------------------------------------

    def greeting(self) -> bytes:
        return Reply(220, "", f"{self.hostname} {'LMTP' if self.lmtp else 'ESMTP'} Dovetail").render()

    def receive_data(self, data: bytes) -> None:
        """Append received bytes; nothing is parsed until ``next_event``."""
        if self.state is not State.CLOSED:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet turned into events (for read backpressure)."""
        return len(self._buf)

    @property
    def in_transaction(self) -> bool:
        return self.state in (State.MAIL, State.RCPT, State.DATA, State.BDAT)

    @property
    def smtputf8(self) -> bool:
        return self._smtputf8

    @property
    def recipients_accepted(self) -> int:
        """RCPT commands accepted in the current transaction."""
        return self._rcpt_count

    @property
    def replies_due(self) -> int:
        """How many replies the pending event takes: the accepted recipients for LMTP's end of data
        (RFC 2033 §4.2), else 1 (0 when nothing is pending)."""
        if self._pending is None:
            return 0
        return self._per_recipient or 1

    @property
    def protocol_name(self) -> str:
        """``with`` value for Received: (RFC 3848, RFC 6531)."""
        if self.lmtp:
            return ("UTF8LMTP" if self._smtputf8 else "LMTP") + ("S" if self.tls_active else "") + (
                "A" if self.authenticated else "")
        if not self.esmtp:
            return "SMTP"
        base = "UTF8SMTP" if self._smtputf8 else "ESMTP"
        suffix = ("S" if self.tls_active else "") + ("A" if self.authenticated else "")
        return base + suffix

    @property
    def tls_offered(self) -> bool:
        return self.tls_available and not self.tls_active

    @property
    def auth_offered(self) -> bool:
        return self.auth_available and not self.authenticated and (self.tls_active or self.auth_plaintext)

    def next_event(self) -> ev.Event:
        """The next event from buffered bytes, or ``NeedData``."""
        if self._pending is not None:
            raise RuntimeError(f"reply to {type(self._pending).__name__} not sent yet")
        if self.state is State.CLOSED or self.closing:
            return ev.NeedData()
        if self.state is State.DATA:
            event = self._data_event()
        elif self.state is State.BDAT:
            event = self._bdat_event()
        else:
            event = self._command_event()
        if event.needs_reply:
            self._pending = event
            self._per_recipient = self._rcpt_count if self.lmtp and self._ends_data(event) else 0
        return event

    def _ends_data(self, event: ev.Event) -> bool:
        """Whether ``event`` closes the message data (the reply LMTP gives per recipient)."""
        if isinstance(event, ev.MessageEnd):
            return True
        if isinstance(event, ev.BdatEnd):
            return event.last
        if isinstance(event, ev.ProtocolError):
            return self.state is State.DATA or (self.state is State.BDAT and self._bdat_last)
        return False

    def send_reply(self, reply: Reply) -> bytes:
        """Render ``reply`` to the pending event and move the state machine on."""
        return self.send_replies([reply] * self.replies_due)

    def send_replies(self, replies: list[Reply]) -> bytes:
        """Render the replies to the pending event (``replies_due`` of them: LMTP answers the end of the
        data once per accepted recipient, in RCPT order) and move the state machine on."""
        event = self._pending
        if event is None:
            raise RuntimeError("no event is waiting for a reply")
        if len(replies) != self.replies_due:
            raise ValueError(f"{type(event).__name__} takes {self.replies_due} replies, not {len(replies)}")
        self._pending = None
        self._per_recipient = 0
        reply = replies[0]
        self._apply(event, reply)
        if any(r.is_error for r in replies):
            self.errors += 1
        if isinstance(event, _JUNK):
            self.junk += 1
            if self.junk > self.limits.max_junk_commands:
                self.errors += 1
        if any(r.closes for r in replies) or (isinstance(event, ev.ProtocolError) and event.close):
            self.closing = True
            self.state = State.CLOSED
        if len(replies) == 1:
            return reply.render()
        return b"".join(r.render() for r in replies)

    def shutdown(self, reply: Reply) -> bytes:
        """An unsolicited closing reply (timeout, server stop); the session is over."""
        self._pending = None
        self._per_recipient = 0
        self.closing = True
        self.state = State.CLOSED
        self._buf.clear()
        return reply.render()

    def default_reply(self, event: ev.Event) -> Reply:
        """The standard reply to events that need no backend decision."""
        if isinstance(event, ev.Ehlo):
            return Reply(250, "", "\n".join([self.hostname, *self.extensions()]))
        if isinstance(event, ev.Helo):
            return Reply(250, "", self.hostname)
        if isinstance(event, (ev.Noop, ev.Rset)):
            return _OK
        if isinstance(event, ev.Vrfy):
            return Reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
        if isinstance(event, ev.Help):
            return Reply(214, "2.0.0", _LMTP_HELP if self.lmtp else _HELP)
        if isinstance(event, ev.Quit):
            return _BYE
        if isinstance(event, ev.StartTls):
            return Reply(220, "2.0.0", "Ready to start TLS")
        if isinstance(event, ev.DataStart):
            return _GO_AHEAD
        if isinstance(event, (ev.ProtocolError, ev.AuthRefused)):
            return event.reply
        if isinstance(event, ev.AuthChallenge):
            return Reply(334, "", event.challenge)
        if isinstance(event, ev.Mail):
            return _MAIL_OK
        if isinstance(event, ev.Rcpt):
            return _RCPT_OK
        if isinstance(event, ev.BdatEnd) and not event.last:
            return Reply(250, "2.0.0", f"Ok: {event.size} octets received")
        raise ValueError(f"no default reply for {type(event).__name__}")

    def extensions(self) -> list[str]:
        """EHLO keywords for the current state (STARTTLS and AUTH depend on TLS)."""
        ext = ["PIPELINING", f"SIZE {self.limits.max_message_size}"]
        if self.tls_offered:
            ext.append("STARTTLS")
        if self.auth_offered:
            ext.append("AUTH " + " ".join(self.auth_mechanisms))
        ext += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
        if self.lmtp:
            ext.append("XDELIVERYID")  # see smtp.address.DELIVERY_ID
        return ext

    # -- state transitions on replies ------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self._rcpt_count = 0
        self._smtputf8 = False
        self._bdat_open = False  # a BDAT chunk was accepted in this transaction
        self._size = 0
        self._data_error: Reply | None = None
        self._abort_sent = False
        self._out: list[bytes] = []  # content pieces of the next DataChunk (joined once, not appended byte-wise)
        self._out_len = 0
        self._bol = True
        self._prev_crlf = True
        self._line_len = 0
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_size = 0
        self._bdat_from_init = False
        self._end_seen = False
        if self.state not in (State.INIT, State.CLOSED):
            self.state = State.READY

    def _apply(self, event: ev.Event, reply: Reply) -> None:
        ok = reply.code < 400
        if isinstance(event, (ev.Helo, ev.Ehlo)):
            if ok:
                self.state = State.READY
                self.esmtp = isinstance(event, ev.Ehlo)
                self._reset_transaction()
        elif isinstance(event, ev.Mail):
            if ok:
                self._reset_transaction()
                self.state = State.MAIL
                self._smtputf8 = event.params.smtputf8
        elif isinstance(event, ev.Rcpt):
            if ok:
                self._rcpt_count += 1
                self.state = State.RCPT
        elif isinstance(event, ev.DataStart):
            if reply.code == 354:
                self.state = State.DATA
                self._size = 0
                self._bol, self._prev_crlf, self._line_len = True, True, 0
        elif isinstance(event, (ev.MessageEnd, ev.Rset)):
            self._reset_transaction()
        elif isinstance(event, ev.BdatEnd):
            if event.last or not ok:
                self._reset_transaction()
            else:
                self._bdat_open = True
                self.state = State.RCPT
        elif isinstance(event, ev.StartTls):
            if reply.code == 220:
                self._buf.clear()  # RFC 3207 §4.2: pipelined plaintext after STARTTLS is discarded
                self.tls_active = True
                self.esmtp = False
                self.state = State.INIT
                self._reset_transaction()
        elif isinstance(event, ev.AuthChallenge):
            if reply.code != 334:
                self._sasl = None
        elif isinstance(event, ev.Auth):
            if reply.code == 235:
                self.authenticated = True
        elif isinstance(event, ev.ProtocolError):
            if self.state in (State.DATA, State.BDAT):
                from_init = self._bdat_from_init
                self._reset_transaction()
                if from_init:
                    self.state = State.INIT

    # -- command phase ---------------------------------------------------------------------------

    def _read_line(self) -> tuple[bytes | None, ev.Event | None]:
        """One complete line without its ending, or an error event, or (None, None) for NeedData."""
        buf = self._buf
        limit = self.limits.max_auth_line if self._sasl is not None else self.limits.max_command_line
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > limit:  # hopeless: drop it and skip to the next LF
                self._skip_long_line = True
                buf.clear()
            return None, None
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        if self._skip_long_line or nl + 1 > limit:
            self._skip_long_line = False
            self._sasl = None
            return None, ev.ProtocolError(Reply(500, "5.5.2", "Error: command line too long"))
        if line.endswith(b"\r"):
            line = line[:-1]
        elif self.limits.bare_lf == "reject":
            return None, self._bare_lf_error()
        return line, None

    def _bare_lf_error(self) -> ev.ProtocolError:
        return ev.ProtocolError(Reply(550, "5.5.2", "Error: bare <LF> received"), close=True)

    def _command_event(self) -> ev.Event:
        self.last_verb = ""
        if self.errors >= self.error_limit:
            return ev.ProtocolError(Reply(421, "4.7.0", f"{self.hostname} Error: too many errors"), close=True)
        raw, error = self._read_line()
        if error is not None:
            return error
        if raw is None:
            return ev.NeedData()
        if self._sasl is not None:
            exchange, self._sasl = self._sasl, None
            self.last_verb = "auth"
            return self._sasl_event(exchange, exchange.receive(raw))
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ev.ProtocolError(Reply(500, "5.5.2", "Error: bad UTF-8 syntax"))
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb)
        self.last_verb = verb.lower() if handler is not None else "unknown"
        if handler is None:
            if not verb:
                return ev.ProtocolError(Reply(500, "5.5.2", "Error: bad syntax"))
            return ev.ProtocolError(Reply(500, "5.5.1", "Error: command not recognized"))
        if _CONTROL.search(line) is not None:
            return ev.ProtocolError(Reply(501, "5.5.2", "Error: control character in command"))
        return handler(self, arg)

    def _need_greeting(self) -> ev.ProtocolError | None:
        if self.state is State.INIT:
            return ev.ProtocolError(Reply(503, "5.5.1", f"Error: send {self._greeting_verbs} first"))
        return None

    @property
    def _greeting_verbs(self) -> str:
        return "LHLO" if self.lmtp else "HELO/EHLO"

    def _cmd_helo(self, arg: str, esmtp: bool = False) -> ev.Event:
        if self.lmtp:  # RFC 2033 §4.1: LHLO replaces both
            return ev.ProtocolError(Reply(500, "5.5.1", "Error: this is LMTP: use LHLO"))
        name = arg.strip()
        if not name or " " in name:
            verb = "EHLO" if esmtp else "HELO"
            return ev.ProtocolError(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
        return ev.Ehlo(name) if esmtp else ev.Helo(name)

    def _cmd_ehlo(self, arg: str) -> ev.Event:
        return self._cmd_helo(arg, esmtp=True)

    def _cmd_lhlo(self, arg: str) -> ev.Event:
        if not self.lmtp:
            return ev.ProtocolError(Reply(500, "5.5.1", "Error: command not recognized"))
        name = arg.strip()
        if not name or " " in name:
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: LHLO hostname"))
        return ev.Lhlo(name)

    def _cmd_mail(self, arg: str) -> ev.Event:
        if err := self._need_greeting():
            return err
        if self.in_transaction:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: nested MAIL command"))
        if arg[:5].upper() != "FROM:":
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
        text = arg[5:].lstrip(" ")
        try:
            address, rest = parse_path(text, utf8=True, null_ok=True)
            raw = parse_params(rest, utf8=True)
        except ValueError as exc:
            return ev.ProtocolError(Reply(501, "5.1.7", f"Bad sender address syntax: {exc}"))
        try:
            params = mail_params(raw, esmtp=self.esmtp, lmtp=self.lmtp)
        except AddressError as exc:
            return ev.ProtocolError(exc.reply)
        if not params.smtputf8 and not (address.isascii() and rest.isascii()):
            return ev.ProtocolError(Reply(553, "5.6.7", "Error: UTF-8 address requires SMTPUTF8"))
        if params.size is not None and params.size > self.limits.max_message_size:
            return ev.ProtocolError(Reply(552, "5.3.4", "Message size exceeds fixed limit"))
        return ev.Mail(address, params)

    def _cmd_rcpt(self, arg: str) -> ev.Event:
        if err := self._need_greeting():
            return err
        if self.state not in (State.MAIL, State.RCPT):
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: need MAIL command"))
        if self._bdat_open:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: RCPT after BDAT"))
        if arg[:3].upper() != "TO:":
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
        text = arg[3:].lstrip(" ")
        try:
            address, rest = parse_path(text, utf8=self._smtputf8, null_ok=False, postmaster_ok=True)
            raw = parse_params(rest, utf8=self._smtputf8)
        except ValueError as exc:
            return ev.ProtocolError(Reply(501, "5.1.3", f"Bad recipient address syntax: {exc}"))
        try:
            params = rcpt_params(raw, esmtp=self.esmtp, lmtp=self.lmtp)
        except AddressError as exc:
            return ev.ProtocolError(exc.reply)
        if self._rcpt_count >= self.limits.max_recipients:
            return ev.ProtocolError(Reply(452, "4.5.3", "Error: too many recipients"))
        return ev.Rcpt(address, params)

    def _cmd_data(self, arg: str) -> ev.Event:
        if err := self._need_greeting():
            return err
        if arg.strip():
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: DATA"))
        if self._bdat_open:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: DATA after BDAT"))
        if self.state is State.READY:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: need MAIL command"))
        if self.state is State.MAIL:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: need RCPT command"))
        return ev.DataStart()

    def _cmd_bdat(self, arg: str) -> ev.Event:
        parts = arg.split(" ")
        if (
            not 1 <= len(parts) <= 2
            or not parts[0].isdigit()
            or not parts[0].isascii()
            or len(parts[0]) > 20
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))
        size, last = int(parts[0]), len(parts) == 2
        self._bdat_left, self._bdat_last, self._bdat_size = size, last, size
        prev = self.state
        self.state = State.BDAT
        self._bdat_from_init = prev is State.INIT
        if prev is State.INIT:
            self._data_error = Reply(503, "5.5.1", f"Error: send {self._greeting_verbs} first")
        elif prev is State.READY:
            self._data_error = Reply(503, "5.5.1", "Error: need MAIL command")
        elif prev is State.MAIL:
            self._data_error = Reply(503, "5.5.1", "Error: need RCPT command")
        elif self._size + size > self.limits.max_message_size:
            self._data_error = Reply(552, "5.3.4", "Message size exceeds fixed limit")
            if self._bdat_open:
                self._abort_sent = True
                return ev.DataAbort(self._data_error)
        if self._data_error is None:
            first = not self._bdat_open
            self._bdat_open = True
            return ev.BdatStart(size, last, first)
        return self._bdat_event()

    def _cmd_rset(self, arg: str) -> ev.Event:
        if arg.strip():
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: RSET"))
        return ev.Rset()

    def _cmd_noop(self, arg: str) -> ev.Event:
        return ev.Noop()

    def _cmd_vrfy(self, arg: str) -> ev.Event:
        if not arg.strip():
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: VRFY address"))
        return ev.Vrfy(arg.strip())

    def _cmd_help(self, arg: str) -> ev.Event:
        return ev.Help(arg.strip())

    def _cmd_quit(self, arg: str) -> ev.Event:
        return ev.Quit()

    def _cmd_starttls(self, arg: str) -> ev.Event:
        if not self.tls_offered:
            return ev.ProtocolError(Reply(502, "5.5.1", "Error: command not implemented"))
        if arg.strip():
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: STARTTLS"))
        if err := self._need_greeting():
            return err
        if self.in_transaction:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: MAIL transaction in progress"))
        return ev.StartTls()

    def _cmd_auth(self, arg: str) -> ev.Event:
        if not self.auth_available:
            return ev.ProtocolError(Reply(502, "5.5.1", "Error: command not implemented"))
        if err := self._need_greeting():
            return err
        if not (self.tls_active or self.auth_plaintext):
            return ev.ProtocolError(Reply(538, "5.7.11", "Encryption required for requested authentication mechanism"))
        if self.authenticated:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: already authenticated"))
        if self.in_transaction:
            return ev.ProtocolError(Reply(503, "5.5.1", "Error: MAIL transaction in progress"))
        parts = arg.split(" ")
        if not parts[0] or len(parts) > 2:
            return ev.ProtocolError(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
        mech = parts[0].upper()
        if mech not in self.auth_mechanisms:
            return ev.ProtocolError(Reply(504, "5.5.4", "Unrecognized authentication type"))
        exchange = SaslExchange(max_line=self.limits.max_auth_line)
        return self._sasl_event(exchange, exchange.start(mech, parts[1] if len(parts) == 2 else None))

    def _sasl_event(self, exchange: SaslExchange, step: Step) -> ev.Event:
        """One step of the SASL exchange (:mod:`dovetail.mailauth.sasl`) as an event."""
        if isinstance(step, Challenge):
            self._sasl = exchange
            return ev.AuthChallenge(step.base64)
        if isinstance(step, Credentials):
            return ev.Auth(step.mechanism, step.authcid, step.password)
        mech = exchange.mechanism.name if exchange.mechanism else ""
        if step.reason is Reason.AUTHZID:
            return ev.AuthRefused(mech, step.authcid, Reply(
                535, "5.7.8", "Error: authentication failed: authorization as another user is not allowed"))
        if step.reason is Reason.CANCELLED:
            return ev.ProtocolError(Reply(501, "5.7.0", "Authentication aborted"))
        if step.reason in (Reason.BAD_BASE64, Reason.BAD_UTF8):
            return ev.ProtocolError(Reply(501, "5.5.2", "Error: cannot decode response"))
        if step.reason is Reason.UNSUPPORTED:
            return ev.ProtocolError(Reply(504, "5.5.4", "Unrecognized authentication type"))
        return ev.ProtocolError(Reply(501, "5.5.2", "Error: " + step.text[:1].lower() + step.text[1:]))

    def _cmd_not_implemented(self, arg: str) -> ev.Event:
        return ev.ProtocolError(Reply(502, "5.5.1", "Error: command not implemented"))

    # -- message content ---------------------------------------------------------------------------

    def _data_event(self) -> ev.Event:
        """Advance DATA parsing until a chunk, the end, an error, or more data is needed."""
        if self._end_seen:
            return self._finish_data()
        chunk = self.limits.chunk_size
        while self._out_len < chunk:
            step = self._data_step()
            if step is None:  # need more input
                break
            if isinstance(step, ev.Event):
                return step
            if step is True:  # end of data: flush the last chunk first
                self._end_seen = True
                return self._take_chunk() if self._out else self._finish_data()
        if self._out:
            return self._take_chunk()
        return ev.NeedData()

    def _take_chunk(self) -> ev.DataChunk:
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_len = 0
        return ev.DataChunk(data)

    def _finish_data(self) -> ev.Event:
        self._end_seen = False
        if self._data_error is not None:
            return ev.ProtocolError(self._data_error)
        return ev.MessageEnd()

    def _data_step(self) -> bool | ev.Event | None:
        """Consume some input. True: end of data; an Event: error; False: progress; None: need data
        (or the pending chunk is full). Output per chunk stays within ``chunk_size`` octets of input,
        so a chunk is at most ``chunk_size`` octets (twice that when bare LFs are normalised)."""
        buf = self._buf
        if self._bol:
            if not buf:
                return None
            if buf[0] == 0x2E:  # "." at line start
                if len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                    return None
                if buf[:3] == b".\r\n" and self._prev_crlf:
                    del buf[:3]
                    return True
                del buf[0]  # dot-unstuffing (RFC 5321 §4.5.2)
            self._bol = False
            self._line_len = 0
        if not buf:
            return None
        end = min(len(buf), self.limits.chunk_size - self._out_len)
        if end <= 0:
            return None
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            take = end - 1 if buf[end - 1] == 0x0D else end
            if take == 0:
                return None
            piece = bytes(memoryview(buf)[:take])  # one copy (a bytearray slice would be a second)
            del buf[:take]
            return self._emit(piece)
        dot = buf.find(b"\n.", 0, nl)
        cut = (dot if dot >= 0 else nl) + 1
        block = bytes(memoryview(buf)[:cut])
        del buf[:cut]
        self._bol = True
        self._prev_crlf = block.endswith(b"\r\n")
        if block.count(b"\n") != block.count(b"\r\n"):
            if self.limits.bare_lf == "reject":
                return self._bare_lf_error()
            block = _BARE_LF.sub(b"\r\n", block)
        return self._emit(block)

    def _emit(self, piece: bytes) -> bool | ev.Event:
        """Account for content octets (size and line limits) and queue them for a DataChunk."""
        if self._data_error is None:
            self._check_lines(piece)
        if self._data_error is None:
            self._size += len(piece)
            if self._size > self.limits.max_message_size:
                self._data_error = Reply(552, "5.3.4", "Message size exceeds fixed limit")
        if self._data_error is not None:
            self._out = []
            self._out_len = 0
            if not self._abort_sent:
                self._abort_sent = True
                return ev.DataAbort(self._data_error)
            return False
        self._out.append(piece)
        self._out_len += len(piece)
        return False

    def _check_lines(self, piece: bytes) -> None:
        limit = self.limits.max_line_length
        if not limit:
            return
        first = piece.find(b"\n")
        if first < 0:
            self._line_len += len(piece)
            longest = self._line_len
        else:
            longest = self._line_len + first + 1
            last = piece.rfind(b"\n")
            if last > first and last - first > limit:
                longest = max(longest, max(len(s) + 1 for s in piece[first + 1 : last].split(b"\n")))
            self._line_len = len(piece) - last - 1
            longest = max(longest, self._line_len)
        if longest > limit:
            self._data_error = Reply(552, "5.6.0", f"Error: message line longer than {limit} octets")

    def _bdat_event(self) -> ev.Event:
        """Stream a BDAT chunk's octets, then emit BdatEnd (or the error found on the way)."""
        chunk = self.limits.chunk_size
        buf = self._buf
        while self._bdat_left and buf and self._out_len < chunk:
            take = min(self._bdat_left, len(buf), chunk - self._out_len)
            piece = bytes(memoryview(buf)[:take])
            del buf[:take]
            self._bdat_left -= take
            if self._data_error is None:
                result = self._emit(piece)
                if isinstance(result, ev.Event):
                    return result
        if self._out:
            return self._take_chunk()
        if self._bdat_left:
            return ev.NeedData()
        if self._data_error is not None:
            return ev.ProtocolError(self._data_error)
        self.state = State.RCPT
        return ev.BdatEnd(self._bdat_size, self._bdat_last)


_COMMANDS = {
    "HELO": SmtpConnection._cmd_helo,
    "EHLO": SmtpConnection._cmd_ehlo,
    "LHLO": SmtpConnection._cmd_lhlo,
    "MAIL": SmtpConnection._cmd_mail,
    "RCPT": SmtpConnection._cmd_rcpt,
    "DATA": SmtpConnection._cmd_data,
    "BDAT": SmtpConnection._cmd_bdat,
    "RSET": SmtpConnection._cmd_rset,
    "NOOP": SmtpConnection._cmd_noop,
    "VRFY": SmtpConnection._cmd_vrfy,
    "HELP": SmtpConnection._cmd_help,
    "QUIT": SmtpConnection._cmd_quit,
    "STARTTLS": SmtpConnection._cmd_starttls,
    "AUTH": SmtpConnection._cmd_auth,
    "EXPN": SmtpConnection._cmd_not_implemented,
    "ETRN": SmtpConnection._cmd_not_implemented,
    "TURN": SmtpConnection._cmd_not_implemented,
}
