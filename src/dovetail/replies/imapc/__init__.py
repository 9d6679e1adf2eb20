"""A small IMAP client for the replies engine: a sans-I/O response parser and an asyncio adapter.

Hand-written rather than ``imaplib``/``imapclient`` because those are blocking and the engine keeps
many accounts in IDLE on one event loop; ``aioimaplib`` exists but parses FETCH literals poorly and
its IDLE handling does not fit a UID checkpoint loop. The client needs a handful of commands only:
CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE PLAIN, SELECT, UID SEARCH, UID FETCH, IDLE, NOOP, LOGOUT.
"""
