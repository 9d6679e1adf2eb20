"""IMAP SEARCH: parse the keys (RFC 3501/9051, CONDSTORE, SEARCHRES, ESEARCH, WITHIN), evaluate them.

Pure functions over a small message protocol: the server adapts its messages to
``SearchableMessage`` and calls ``parse_search`` then ``evaluate``; nothing here does I/O.
One module per job, all of it importable from here:

- ``keys``: the key tree, ``SearchRequest``, ``SearchContext``, ``SearchError`` and ``SearchableMessage``;
- ``parse``: command arguments → key tree;
- ``facts``: the fast path, keys decided by the index facts alone (no object per message);
- ``match``: every key over message objects, cheapest operands first;
- ``results``: ``* SEARCH`` and ``* ESEARCH`` lines, what SAVE keeps, the MODSEQ reported.
"""

from __future__ import annotations

from dovetail.imap.search.facts import FactPred, Facts, HeaderLookup, compile_facts
from dovetail.imap.search.keys import (
    Age,
    All,
    And,
    Body,
    Date,
    Flag,
    Header,
    ModSeq,
    Not,
    Or,
    SearchableMessage,
    SearchContext,
    SearchError,
    SearchKey,
    SearchRequest,
    SeqSet,
    Size,
    Text,
    iter_keys,
)
from dovetail.imap.search.match import Pred, compile_key, evaluate, evaluate_messages, message_sent_date
from dovetail.imap.search.parse import (
    MAX_DEPTH,
    MAX_KEYS,
    RETURN_OPTIONS,
    SUPPORTED_CHARSETS,
    check_charset,
    normalize_token,
    parse_keys,
    parse_returns,
    parse_search,
)
from dovetail.imap.search.results import (
    format_esearch,
    format_search,
    highest_modseq,
    reported,
    saved_result,
)

__all__ = [
    "MAX_DEPTH", "MAX_KEYS", "RETURN_OPTIONS", "SUPPORTED_CHARSETS",
    "Age", "All", "And", "Body", "Date", "Flag", "Header", "ModSeq", "Not", "Or", "SeqSet", "Size", "Text",
    "SearchKey", "SearchRequest", "SearchContext", "SearchError", "SearchableMessage", "iter_keys",
    "normalize_token", "parse_search", "parse_keys", "parse_returns", "check_charset",
    "Facts", "FactPred", "HeaderLookup", "compile_facts",
    "Pred", "compile_key", "evaluate", "evaluate_messages", "message_sent_date",
    "format_search", "format_esearch", "reported", "saved_result", "highest_modseq",
]
