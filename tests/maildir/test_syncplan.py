"""The sync planner on arbitrary folders: every listed file ends with one UID, UIDs are never reused,
a vanished message is expunged once, flags survive the trip through a file name, and a sync right
after a sync changes nothing. Pure properties first, then the same promises through a real Maildir,
``dovecot-uidlist`` and index."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.maildir import keywords as kwfile
from dovetail.maildir import syncplan, uidlist
from dovetail.maildir.filename import INFO_SEP, info_string
from dovetail.maildir.folder import Folder
from dovetail.maildir.syncplan import Listed, SyncPlan
from dovetail.storage.api import SYSTEM_FLAGS

BASES = st.builds(
    lambda secs, usec, q: f"{secs}.M{usec}P7Q{q}.host,S=10",
    st.integers(1_700_000_000, 1_700_000_050),
    st.integers(0, 999_999),
    st.integers(0, 10**6),
)
INFOS = st.sets(st.sampled_from("DFRSTabcz")).map(lambda letters: "".join(sorted(letters)))
KEYWORDS = st.dictionaries(st.integers(0, 25), st.sampled_from(["$Junk", "work", "later", "$Forwarded"]), max_size=4)


def name_in(sub: str, base: str, info: str) -> str:
    return f"{base}{INFO_SEP}{info}" if sub == "cur" else base


@st.composite
def folders(draw: st.DrawFn) -> tuple[dict[str, Listed], dict[str, int], dict[int, str], int, int]:
    """(listing, uidlist basename -> uid, index uid -> "sub/filename", index UIDNEXT, uidlist UIDNEXT):
    some files numbered and indexed, some indexed under an older name, some numbered only, some new,
    some indexed under a UID our uidlist does not know yet, and index rows and uidlist records of
    files gone."""
    bases = draw(st.lists(BASES, unique=True, max_size=12))
    gone = draw(st.lists(BASES.filter(lambda b: b not in bases), unique=True, max_size=4))
    listing = {}
    for b in bases:
        sub = draw(st.sampled_from(["cur", "new"]))
        listing[b] = Listed(sub, name_in(sub, b, draw(INFOS)))
    numbered = [b for b in bases + gone if draw(st.booleans())]
    uids = sorted(draw(st.lists(st.integers(1, 200), unique=True, min_size=len(numbered), max_size=len(numbered))))
    by_base = dict(zip(numbered, uids, strict=True))
    nextuid = max(uids, default=0) + 1 + draw(st.integers(0, 3))
    files: dict[int, str] = {}
    for b, uid in by_base.items():
        if draw(st.booleans()):
            sub = draw(st.sampled_from(["cur", "new"]))
            files[uid] = f"{sub}/{name_in(sub, b, draw(INFOS))}"
    for uid, b in enumerate((b for b in bases if b not in by_base), start=300):
        if draw(st.booleans()):  # numbered and indexed by another writer after our uidlist read
            files[uid] = f"{listing[b].sub}/{listing[b].filename}"
    return listing, by_base, files, draw(st.integers(0, nextuid + 2)), nextuid


def applied(files: dict[int, str], index_uidnext: int, plan: SyncPlan) -> tuple[dict[int, str], int]:
    """What the index holds after ``plan`` (every insert finds its file)."""
    out = {u: fn for u, fn in files.items() if u not in set(plan.expunge)}
    for r in plan.renames:
        out[r.uid] = r.filename
    for ins in plan.inserts:
        out[ins.uid] = ins.filename
    return out, plan.uidnext if plan.uidnext is not None else index_uidnext


@given(folders(), KEYWORDS)
def test_plan_makes_the_index_match_the_listing_and_is_idempotent(folder, keywords) -> None:
    listing, by_base, files, index_uidnext, nextuid = folder
    plan = syncplan.plan(listing, by_base, files, keywords, index_uidnext, nextuid)
    expunged, renamed, inserted = plan.expunge, [r.uid for r in plan.renames], [i.uid for i in plan.inserts]
    assert len(set(expunged + renamed + inserted)) == len(expunged) + len(renamed) + len(inserted)
    assert set(expunged) <= set(files) and set(renamed) <= set(files) and not set(inserted) & set(files)
    for uid in expunged:  # only what is gone from the disk
        assert files[uid][4:].partition(":")[0] not in listing
    after, uidnext_after = applied(files, index_uidnext, plan)
    for b, item in listing.items():
        if b in by_base:
            assert after[by_base[b]] == f"{item.sub}/{item.filename}"
    for fn in after.values():  # nothing indexed whose file is not listed
        assert fn[4:].partition(":")[0] in listing
    assert uidnext_after >= nextuid
    again = syncplan.plan(listing, by_base, after, keywords, uidnext_after, nextuid)
    assert not again, again
    if set(after) <= set(by_base.values()):
        assert syncplan.agrees(listing, by_base, set(after.values()), uidnext_after, nextuid)


@given(folders(), KEYWORDS)
def test_renames_write_flags_only_when_the_info_changed(folder, keywords) -> None:
    listing, by_base, files, index_uidnext, nextuid = folder
    plan = syncplan.plan(listing, by_base, files, keywords, index_uidnext, nextuid)
    for r in plan.renames:
        old = files[r.uid]
        old_info = old.partition(":2,")[2] if old.startswith("cur/") else ""
        assert (r.flags is None) == (old_info == r.info)
        if r.flags is not None:
            assert r.flags == syncplan.flags_of(r.info, keywords)
    for ins in plan.inserts:
        assert ins.info == (ins.listed.filename.partition(":2,")[2] if ins.listed.sub == "cur" else "")
        assert ins.flags == syncplan.flags_of(ins.info, keywords)


@given(
    st.sets(st.sampled_from(sorted(SYSTEM_FLAGS))),
    st.dictionaries(st.integers(0, 25), st.from_regex(r"\A[A-Za-z$][A-Za-z0-9_]{0,8}\Z"), max_size=6),
    st.data(),
)
def test_flags_round_trip_through_the_info(system, keywords, data) -> None:
    keywords = {i: n for i, n in keywords.items() if list(keywords.values()).count(n) == 1}
    chosen = data.draw(st.sets(st.sampled_from(sorted(keywords))) if keywords else st.just(set()))
    info = info_string(frozenset(system), "".join(kwfile.letter(i) for i in chosen))
    assert info == "".join(sorted(info))  # Maildir keeps the letters in ASCII order
    assert syncplan.flags_of(info, keywords) == sorted(system) + sorted(keywords[i] for i in chosen)


@given(st.lists(st.tuples(st.sampled_from(["new", "cur"]), BASES, INFOS, st.booleans()), max_size=12), st.booleans())
def test_listing_gives_each_basename_one_place(files, move) -> None:
    new = [name_in("new", b, i) if not with_info else f"{b}{INFO_SEP}{i}" for sub, b, i, with_info in files
           if sub == "new"] + [".hidden"]
    cur = [name_in("cur", b, i) for sub, b, i, _ in files if sub == "cur"] + [".also-hidden"]
    moves = syncplan.moves_into_cur(new)
    assert [src for src, _ in moves] == new[:-1]
    assert all(INFO_SEP in dst and syncplan.base_of(dst) == syncplan.base_of(src) for src, dst in moves)
    assert all(dst == src for src, dst in moves if INFO_SEP in src)
    listing = syncplan.listing_of(new, cur + ([dst for _, dst in moves] if move else []),
                                  dict(moves) if move else None)
    assert set(listing) == {syncplan.base_of(fn) for fn in new + cur if not fn.startswith(".")}
    for base, item in listing.items():
        assert syncplan.base_of(item.filename) == base
        assert item.sub == "cur" if move or any(syncplan.base_of(fn) == base for fn in cur) else item.sub == "new"


@given(
    st.lists(BASES, unique=True, max_size=8), st.lists(BASES, max_size=8), st.integers(0, 5), st.booleans()
)
def test_numbering_gives_fresh_uids_in_delivery_order(known, incoming, gap, shuffle) -> None:
    entries = {i + 1: (b, "") for i, b in enumerate(known)}
    by_base = {b: u for u, (b, _e) in entries.items()}
    nextuid = len(known) + 1 + gap
    listing = {b: Listed("new", b) for b in (known + incoming)[:: -1 if shuffle else 1]}
    todo = syncplan.unnumbered(listing, by_base)
    assert todo == sorted(set(incoming) - set(known), key=syncplan.delivery_order)
    before = (dict(entries), dict(by_base))
    out = syncplan.number(entries, nextuid, by_base, todo)
    assert (entries, by_base) == before  # the shared cached copy is left alone
    assert [b for _u, b in out.added] == todo
    assert [u for u, _b in out.added] == list(range(nextuid, nextuid + len(todo)))
    assert out.nextuid == nextuid + len(todo) and not set(entries) & {u for u, _b in out.added}
    assert all(out.by_base[b] == u for u, (b, _e) in out.entries.items())
    assert set(listing) <= set(out.by_base)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, tuple[str, str]]]:
    """Successive states of a folder (basename -> (sub, info)): deliveries, flag changes, moves to
    cur/ and removals, with names never used twice (as Maildir names are unique)."""
    counter = itertools.count()
    state: dict[str, tuple[str, str]] = {}
    out = []
    for _ in range(draw(st.integers(1, 6))):
        state = dict(state)
        for b in draw(st.lists(st.sampled_from(sorted(state)), unique=True)) if state else []:
            action = draw(st.sampled_from(["flag", "move", "remove"]))
            if action == "remove":
                del state[b]
            else:
                state[b] = ("cur", draw(INFOS) if action == "flag" else state[b][1])
        for _ in range(draw(st.integers(0, 4))):
            state[f"{1_700_000_000 + draw(st.integers(0, 9))}.M{next(counter)}P1Q1.h"] = (
                draw(st.sampled_from(["new", "cur"])), draw(INFOS))
        out.append(state)
    return out


@given(histories(), KEYWORDS)
def test_a_history_of_syncs_numbers_once_and_expunges_once(history, keywords) -> None:
    entries: dict[int, tuple[str, str]] = {}
    nextuid, files, index_uidnext = 1, {}, 0
    uid_of: dict[str, int] = {}
    expunged: list[int] = []
    for state in history:
        listing = {b: Listed(sub, name_in(sub, b, info)) for b, (sub, info) in state.items()}
        by_base = {b: u for u, (b, _e) in entries.items()}
        todo = syncplan.unnumbered(listing, by_base)
        if todo:  # as syncapply.assign_uids with a listing
            numbering = syncplan.number(entries, nextuid, by_base, todo)
            for u in syncplan.vanished(numbering.entries, listing, todo):
                del numbering.entries[u]
            entries, nextuid = numbering.entries, numbering.nextuid
            by_base = {b: u for u, (b, _e) in entries.items()}
        plan = syncplan.plan(listing, by_base, files, keywords, index_uidnext, nextuid)
        files, index_uidnext = applied(files, index_uidnext, plan)
        expunged += plan.expunge
        for b in listing:  # one UID per file, the same for its whole life
            assert uid_of.setdefault(b, by_base[b]) == by_base[b]
        assert sorted(files) == sorted(by_base[b] for b in listing)
        assert not syncplan.plan(listing, by_base, files, keywords, index_uidnext, nextuid)
    assert len(set(uid_of.values())) == len(uid_of)  # never reused
    assert len(set(expunged)) == len(expunged)  # each once
    assert set(expunged) == set(uid_of.values()) - set(files)


# --- the same promises through the disk ---------------------------------------------------------

MESSAGE = b"From: a@example.org\nTo: b@example.com\nSubject: s\n\nbody\n"
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(1, 3)),
        st.tuples(st.just("flag"), st.integers(0, 50), INFOS.filter(lambda i: not (set(i) & set("abcz")))),
        st.tuples(st.just("remove"), st.integers(0, 50)),
        st.tuples(st.just("sync"), st.booleans()),
    ),
    min_size=1,
    max_size=10,
)


def _files(root: Path) -> dict[str, str]:
    return {fn.partition(":")[0]: f"{sub}/{fn}" for sub in ("new", "cur") for fn in os.listdir(root / sub)}


def _check(folder: Folder, root: Path, seen: dict[str, int], expunged: dict[int, int]) -> None:
    on_disk = _files(root)
    ul = uidlist.read(root / uidlist.UIDLIST)
    assert ul is not None
    by_base = ul.by_basename()
    rows = dict(folder.index.db.execute("SELECT uid, filename FROM msg"))
    assert sorted(rows.values()) == sorted(on_disk.values())
    for base, stored in on_disk.items():
        uid = by_base[base]
        assert rows[uid] == stored
        assert seen.setdefault(base, uid) == uid  # a file keeps its UID
    gone = set(seen.values()) - set(rows)
    recorded = dict(folder.index.db.execute("SELECT uid, modseq FROM expunged"))
    assert gone == set(recorded)
    for uid, modseq in recorded.items():  # each expunge recorded once: its modseq never moves again
        assert expunged.setdefault(uid, modseq) == modseq
    assert len(set(seen.values())) == len(seen)
    top = folder.index.get_int("highestmodseq")
    folder.sync(force=True)
    assert folder.index.get_int("highestmodseq") == top  # nothing left to do


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_syncing_a_real_maildir(ops) -> None:
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (root / sub).mkdir(parents=True)
        folder = Folder(root)
        seen: dict[str, int] = {}
        expunged: dict[int, int] = {}
        try:
            for op in ops + [("sync", True)]:
                names = sorted(_files(root).values())
                if op[0] == "deliver":
                    for _ in range(op[1]):
                        n = next(counter)
                        (root / "new" / f"{1_700_000_000 + n}.M{n}P9Q{n}.test").write_bytes(MESSAGE)
                elif op[0] == "flag" and names:
                    old = names[op[1] % len(names)]
                    os.rename(root / old, root / "cur" / f"{syncplan.base_of(old[4:])}{INFO_SEP}{op[2]}")
                elif op[0] == "remove" and names:
                    os.unlink(root / names[op[1] % len(names)])
                elif op[0] == "sync":
                    folder.sync(move_new=op[1], force=True)
                    if op[1]:
                        assert not os.listdir(root / "new")
                    _check(folder, root, seen, expunged)
        finally:
            folder.close()
