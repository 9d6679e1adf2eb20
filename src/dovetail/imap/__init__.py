"""IMAP4rev1/rev2 server over the mailbox storage API.

Layers, each its own module:

- ``parser``: sans-I/O command reader (``CommandParser.feed``/``next_event``): the framing, with
  ``tokens`` for one command's token tree, ``fetchatt`` for FETCH items and ``sequence`` for sequence sets;
- ``session``: one connection's state machine (``Session.feed``/``step``/``data_to_send``), with the
  connection-level commands (CAPABILITY, LOGIN, AUTHENTICATE, ENABLE, IDLE, ...);
- ``commands``: the commands that work on mail storage, one module per command group, behind the
  ``CommandSession`` protocol (the session imports them, they never import the session);
- ``search``, ``sort`` and ``thread``: SEARCH/SORT/THREAD as pure functions over a message protocol;
- ``server``: the asyncio adapter, ``ImapServer(authenticator, storage_factory, limits, ssl_context,
  implicit_tls)`` with ``await start(sock=...)`` / ``await stop(grace)``;
- ``proxy``: the I/O of a login handed to the account's home node in a cluster (the session decides,
  :mod:`dovetail.mailauth.homes` says where), then bytes moved both ways;
- ``auth``: the ``Authenticator`` protocol, ``Account`` and the failed-login penalty;
- ``limits``: every size, count and time a client controls.
"""
