"""``dovetail tenant move`` between two nodes on one PostgreSQL directory: an IMAP client of the new home
sees the same UIDVALIDITY, UIDs, flags, keywords and bytes; mail sent meanwhile waits and arrives once;
a mover killed with kill -9 (mid-copy, or paused in its final sync) resumes to the same result; bad input
is refused with exit 2 and leaves no move behind."""

from __future__ import annotations

import imaplib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dovetail import config
from dovetail.db import make_engine
from dovetail.directory import Directory
from dovetail.directory.moves import MoveError
from dovetail.directory.nodes import NodeStore
from dovetail.mailauth.passwords import hash_password
from dovetail.move.mover import Mover

from ..master.harness import DOVETAIL, Master, cli, free_port, share_master_key, wait_for

SECRET = "cluster-secret-for-tests"
TENANTS = {"acme": "bob", "globex": "ann", "umbrella": "kim"}


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


class Cluster:
    def __init__(self, a: Master, b: Master, engine: Engine) -> None:
        self.a, self.b, self.engine = a, b, engine

    def send(self, address: str, subject: str, count: int = 1) -> None:
        with self.a.smtp() as s:
            for n in range(count):
                s.sendmail("alice@ext.example", [address],
                           f"From: alice@ext.example\r\nTo: {address}\r\nSubject: {subject} {n}\r\n\r\n"
                           f"body {n} of {subject}\r\n")

    def files(self, node: Master, tenant: str) -> list[Path]:
        box = node.data_dir / "mail" / tenant / f"{tenant}.example" / TENANTS[tenant]
        return [p for sub in ("new", "cur") for p in (box / sub).glob("*") if p.is_file()]


def imap_login(node: Master, tenant: str) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", node.imap_port, timeout=30)
    conn.login(f"{TENANTS[tenant]}@{tenant}.example", "secret")
    return conn


def imap_view(node: Master, tenant: str) -> dict:
    """UIDVALIDITY, UIDNEXT and every message's UID, flags and bytes, per mailbox, as a client reads them."""
    conn = imap_login(node, tenant)
    try:
        view = {}
        for name in ("INBOX", "Projects"):
            typ, data = conn.status(name, "(UIDVALIDITY UIDNEXT MESSAGES)")
            if typ != "OK":
                continue
            conn.select(name, readonly=True)
            typ, fetched = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            messages = {}
            for item in fetched:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    uid = int(re.search(r"UID (\d+)", head).group(1))  # type: ignore[union-attr]
                    flags = sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()  # type: ignore[union-attr]
                                   if f != "\\Recent")  # \Recent is per session, not stored
                    messages[uid] = (flags, item[1])
            view[name] = (data[0].decode(), messages)
        return view
    finally:
        conn.logout()


def moves(node: Master, tenant: str) -> list[dict]:
    return json.loads(ok(node, "tenant", "move", tenant, "--status", "--json"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_cluster: object) -> Iterator[Cluster]:
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    root = tmp_path_factory.mktemp("move")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = Master.create(root / "a", database_url=url, populate=False)
    b = Master.create(root / "b", database_url=url, populate=False)
    share_master_key(a, b)
    ports = {name: free_port() for name in ("a-lmtp", "a-transfer", "b-lmtp", "b-transfer", "nowhere")}
    engine = make_engine(url)  # the cluster's directory, filled in-process (a CLI process per step is slow)
    try:
        nodes = NodeStore(engine)
        for m, name in ((a, "a"), (b, "b")):
            for key, value in (("node.name", name), ("listen.lmtp", f"127.0.0.1:{ports[name + '-lmtp']}"),
                               ("listen.transfer", f"127.0.0.1:{ports[name + '-transfer']}"),
                               ("cluster.secret", SECRET)):
                config.set_value(m.data_dir, key, value)
            nodes.add(name, "mailbox,mx", lmtp=f"127.0.0.1:{ports[name + '-lmtp']}",
                      transfer=f"127.0.0.1:{ports[name + '-transfer']}")
        nodes.add("c", "mailbox", lmtp="127.0.0.1:9", transfer=f"127.0.0.1:{ports['nowhere']}")  # nothing answers
        nodes.add("d", "mailbox", lmtp="127.0.0.1:9")
        nodes.set_state("d", "draining")
        directory = Directory(engine)
        password = hash_password("secret")
        for tenant, local in (*TENANTS.items(), ("initech", "joe")):
            directory.tenant_add(tenant, node="c" if tenant == "initech" else "a")
            directory.domain_add(f"{tenant}.example", tenant)
            directory.mailbox_add(f"{local}@{tenant}.example", password)
        a.start()
        b.start()
        yield Cluster(a, b, engine)
    finally:
        engine.dispose()
        for m in (a, b):
            m.stop()
            m.cleanup()


@pytest.mark.timeout(300)
def test_a_moved_tenant_keeps_uids_flags_keywords_and_bytes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    cluster.send("bob@acme.example", "before the move", 4)
    wait_for(lambda: len(cluster.files(a, "acme")) == 4, 60, "four messages on the old home")
    conn = imap_login(a, "acme")
    conn.create("Projects")
    conn.append("Projects", r"(\Flagged $Label1)", None, b"Subject: plan\r\n\r\nthe plan\r\n")
    conn.select("INBOX")
    conn.store("1", "+FLAGS", r"(\Seen $Forwarded)")
    conn.store("2", "+FLAGS", r"(\Deleted)")
    conn.expunge()
    conn.logout()
    before = imap_view(a, "acme")
    assert len(before["INBOX"][1]) == 3 and len(before["Projects"][1]) == 1

    ok(b, "tenant", "move", "acme", "--to", "b")

    assert imap_view(b, "acme") == before
    flags = [f for f, _ in before["INBOX"][1].values()] + [f for f, _ in before["Projects"][1].values()]
    assert ["$Forwarded", "\\Seen"] in flags and ["$Label1", "\\Flagged"] in flags
    assert "node=b" in ok(a, "resolve", "bob@acme.example")
    assert not (a.data_dir / "mail" / "acme").exists()
    [record] = moves(a, "acme")
    assert record["state"] == "cleaned" and (a.data_dir / "mail" / ".moved-away" / f"acme.{record['id']}").is_dir()
    cluster.send("bob@acme.example", "after the move")  # taken by a, handed to b over LMTP
    wait_for(lambda: len(cluster.files(b, "acme")) == 4, 60, "new mail at the new home")
    assert b"after the move 0" in b"".join(p.read_bytes() for p in cluster.files(b, "acme"))
    kept = a.data_dir / "mail" / ".moved-away" / f"acme.{record['id']}"
    young = json.loads(ok(a, "tenant", "move", "--purge-moved", "--json"))  # 7 days by default: kept
    assert young["removed"] == [] and [k["path"] for k in young["kept"]] == [str(kept)] and kept.is_dir()
    gone = json.loads(ok(a, "tenant", "move", "acme", "--purge-moved", "--older-than", "0", "--json"))
    assert [r["path"] for r in gone["removed"]] == [str(kept)] and gone["removed"][0]["bytes"] > 0
    assert not kept.exists() and (a.data_dir / "mail" / ".moved-away").is_dir()


@pytest.mark.timeout(120)
def test_any_node_shows_a_mailbox_usage_counted_by_its_home(cluster: Cluster) -> None:
    """The API of node a reports what bob@acme holds on its home (b after the move above, a otherwise)
    by asking that node; a tenant whose home does not answer shows unknown, not zero."""
    from fastapi.testclient import TestClient

    from dovetail.web import auth
    from dovetail.web.app import create_app

    a, b = cluster.a, cluster.b
    cluster.send("bob@acme.example", "usage", 2)
    home = b if Directory(cluster.engine).tenant_get("acme")["home_node"] == "b" else a
    def both_arrived() -> bool:  # queued separately, they may arrive in either order
        held = b"".join(p.read_bytes() for p in cluster.files(home, "acme"))
        return b"usage 0" in held and b"usage 1" in held

    wait_for(both_arrived, 60, "mail at home")
    box = home.data_dir / "mail" / "acme" / "acme.example" / "bob"
    files = [p for folder in (box, *box.glob(".*")) for sub in ("new", "cur") for p in (folder / sub).glob("*")]
    token = auth.token_add(cluster.engine, "admin", name="usage-test").token
    app = create_app(config.load(a.data_dir), cluster.engine, flush_interval=3600)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        h = {"Authorization": f"Bearer {token}"}
        r = client.get("/api/v1/mailboxes/bob@acme.example", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["messages"] == len(files) and r.json()["usage_bytes"] == sum(p.stat().st_size for p in files)
        listed = client.get("/api/v1/mailboxes", params={"tenant": "initech"}, headers=h).json()["items"]
        unknown = [(i["address"], i["usage_bytes"], i["messages"]) for i in listed]
        assert unknown == [("joe@initech.example", None, None)]


@pytest.mark.timeout(300)
def test_bad_moves_are_refused_and_leave_nothing_behind(cluster: Cluster) -> None:
    b = cluster.b
    for args, why in ((("nosuch", "--to", "b"), "no such tenant"), (("initech", "--to", "b"), "unreachable")):
        out = cli(b.data_dir, "tenant", "move", *args)  # the CLI: one line, exit 2
        assert out.returncode == 2 and why in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    mover = Mover(cluster.engine, b.data_dir / "mail", "b", SECRET, settle=0)
    for tenant, target, why in (("globex", "zz", "no such node"), ("globex", "d", "draining"),
                                ("globex", "a", "already homed on node a")):
        with pytest.raises(MoveError, match=why):
            mover.prepare(tenant, target)
    with pytest.raises(MoveError, match="run the move on the target node b"):
        Mover(cluster.engine, cluster.a.data_dir / "mail", "a", SECRET, settle=0).prepare("globex", "b")
    with pytest.raises(MoveError, match="refused: 401"):  # a node with another secret is not let in
        Mover(cluster.engine, b.data_dir / "mail", "b", "not-the-secret", settle=0).prepare("globex", "b")
    assert moves(b, "globex") == [] and moves(b, "initech") == []
    assert not (b.data_dir / "mail" / ".moving").exists()


def _stalled_mover(b: Master, tenant: str, stall: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*DOVETAIL, "--data-dir", str(b.data_dir), "tenant", "move", tenant, "--to", "b"],
                            env={**os.environ, "DOVETAIL_TEST_MOVE_STALL": stall},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = b.data_dir / "mail" / ".moving" / f"{tenant}.stalled"
    wait_for(lambda: marker.exists() or proc.poll() is not None, 60, "the mover at its kill point")
    assert proc.poll() is None, "the mover ended before its kill point"
    return proc


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(300)
def test_a_mover_killed_mid_copy_resumes_to_the_same_result(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    cluster.send("ann@globex.example", "many", 8)
    wait_for(lambda: len(cluster.files(a, "globex")) == 8, 60, "eight messages on the old home")
    before = imap_view(a, "globex")
    _kill9(_stalled_mover(b, "globex", "copying:3"))
    [record] = moves(b, "globex")
    assert record["state"] == "copying"
    staged = b.data_dir / "mail" / ".moving" / "globex"
    assert 0 < sum(1 for p in staged.rglob("*") if p.is_file()) < 20  # part of the tree, whole files only

    ok(b, "tenant", "move", "globex", "--to", "b")

    assert imap_view(b, "globex") == before
    assert [m["state"] for m in moves(b, "globex")] == ["cleaned"]
    assert not staged.exists() and not (a.data_dir / "mail" / "globex").exists()


@pytest.mark.timeout(300)
def test_mail_waits_while_the_move_is_paused_and_arrives_once_at_the_new_home(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    cluster.send("kim@umbrella.example", "early", 2)
    wait_for(lambda: len(cluster.files(a, "umbrella")) == 2, 60, "two messages on the old home")
    before = imap_view(a, "umbrella")
    session = imap_login(a, "umbrella")
    session.select("INBOX")
    mover = _stalled_mover(b, "umbrella", "final-sync")  # paused, before its final pass
    try:
        session.sock.settimeout(30)
        assert session.readline().startswith(b"* BYE Mailbox is being moved")  # ended by the pause
        cluster.send("kim@umbrella.example", "during the move")
        wait_for(lambda: "mailbox is moving" in a.log(), 60, "the delivery deferred on the old home")
        assert len(cluster.files(a, "umbrella")) == 2
        conn = imaplib.IMAP4("127.0.0.1", a.imap_port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            conn.login("kim@umbrella.example", "secret")
        conn.logout()
    finally:
        _kill9(mover)
    assert moves(b, "umbrella")[0]["state"] == "final-sync"
    pending = json.loads(ok(b, "status", "--json"))["moves_pending"]
    assert len(pending) == 1 and "tenant umbrella" in pending[0] and "PAUSED" in pending[0]
    assert "resume it on this node with `dovetail tenant move umbrella --to b`" in pending[0]

    ok(b, "tenant", "move", "umbrella", "--to", "b")  # resumes the final sync and switches

    after = imap_view(b, "umbrella")
    assert {uid: m for uid, m in after["INBOX"][1].items() if uid in before["INBOX"][1]} == before["INBOX"][1]
    assert after["INBOX"][0] == before["INBOX"][0] or "UIDVALIDITY" in after["INBOX"][0]
    wait_for(lambda: len(cluster.files(b, "umbrella")) == 3, 90, "the held mail delivered at the new home")
    bodies = b"".join(p.read_bytes() for p in cluster.files(b, "umbrella"))
    assert bodies.count(b"Subject: during the move 0") == 1
    assert not (a.data_dir / "mail" / "umbrella").exists()
