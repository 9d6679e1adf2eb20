"""Two nodes of a cluster on one PostgreSQL directory: an MX node hands each recipient to the node its
tenant is homed on, over LMTP; that node's lmtpd refuses mailboxes homed elsewhere."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from ..master.harness import Master, cli, free_port, wait_for


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(600)  # two whole servers and a CLI process per step
def test_mail_taken_by_one_node_lands_in_the_maildir_of_its_home_node(tmp_path: Path, pg_cluster: object) -> None:
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Master.create(tmp_path / "a", database_url=url)  # creates tenant acme while no node exists...
    b = Master.create(tmp_path / "b", database_url=url, populate=False)
    port = free_port()
    ok(a, "config", "set", "node.name=a")
    ok(b, "config", "set", "node.name=b", f"listen.lmtp=127.0.0.1:{port}")
    ok(a, "node", "add", "a", "--roles", "mx")
    ok(a, "node", "add", "b", "--roles", "mailbox", "--lmtp", f"127.0.0.1:{port}")
    ok(a, "node", "add", "c", "--roles", "mailbox", "--lmtp", "127.0.0.1:9")
    # ...so the cluster's tenants are made now, each placed on its node.
    ok(a, "tenant", "rm", "acme", "--force")
    assert "on node b" in ok(a, "tenant", "add", "acme", "--node", "b")
    ok(a, "domain", "add", "acme.example", "--tenant", "acme")
    ok(a, "mailbox", "add", "bob@acme.example", "--password", "secret")
    assert "on node c" in ok(a, "tenant", "add", "globex", "--node", "c")
    ok(a, "domain", "add", "globex.example", "--tenant", "globex")
    ok(a, "mailbox", "add", "ann@globex.example", "--password", "secret")
    assert "node=b" in ok(a, "resolve", "bob@acme.example")
    b.start()
    a.start()
    try:
        with a.smtp() as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"],
                       "From: alice@ext.example\r\nTo: bob@acme.example\r\nSubject: to the home node\r\n\r\nhi\r\n")
        wait_for(lambda: len(b.maildir_files()) == 1, 90, "delivery over LMTP to bob's home node")
        assert a.maildir_files() == []  # the MX node keeps no copy
        # qmgr logs the outcome once the LMTP reply is in, which may be just after the file appears
        wait_for(lambda: "relay=lmtp:127.0.0.1" in a.log() and "status=sent" in a.log(), 30, "the LMTP outcome logged")
        # B's lmtpd takes only what is homed on B.
        with smtplib.LMTP("127.0.0.1", port, timeout=30) as lmtp:
            lmtp.ehlo_or_helo_if_needed()
            lmtp.mail("alice@ext.example")
            code, text = lmtp.rcpt("ann@globex.example")
            assert code == 550 and b"homed on node c" in text
            assert lmtp.rcpt("bob@acme.example")[0] == 250
    finally:
        a.stop()
        b.stop()
        a.cleanup()
        b.cleanup()
