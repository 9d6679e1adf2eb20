"""The IMAP commands end to end: imapclient and imaplib against a live server on 127.0.0.1."""

from __future__ import annotations

import imaplib
import re
import threading

import pytest
from imapclient import IMAPClient

from tests.imap.imap_testkit import RawClient

MSG = (b"From: Ann <ann@example.com>\r\nTo: bob@example.org\r\nSubject: hello there\r\n"
       b"Message-ID: <m1@example.com>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nBody text here.\r\n")


def msg(n: int, subject: str = "hello") -> bytes:
    return MSG.replace(b"hello there", f"{subject} {n}".encode()).replace(b"<m1@", f"<m{n}@".encode())


def client(srv, user: str = "alice") -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
    c.login(user, {"alice": "wonderland", "bob": "builder"}[user])
    return c


def raw_login(srv, user: bytes = b"alice", pw: bytes = b"wonderland") -> RawClient:
    c = RawClient(srv.port)
    assert c.cmd(b"L LOGIN " + user + b" " + pw)[-1].startswith(b"L OK")
    return c


def append_messages(c: RawClient, numbers: range) -> None:
    """APPEND ``msg(n)`` to INBOX for each n, through a synchronising literal."""
    for n in numbers:
        body = msg(n)
        c.send(b"p APPEND INBOX {%d}\r\n" % len(body))
        assert c.readline().startswith(b"+")
        c.send(body + b"\r\n")
        assert c.read_until_tagged(b"p")[-1].startswith(b"p OK")


def test_append_select_fetch(mail_server):
    c = client(mail_server)
    res = c.append("INBOX", msg(1), flags=[b"\\Flagged"])
    assert b"APPENDUID" in res
    c.append("INBOX", msg(2))
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 2
    assert info[b"UIDVALIDITY"] > 0 and info[b"UIDNEXT"] == 3
    data = c.fetch([1, 2], ["FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE", "ENVELOPE", "BODY.PEEK[]"])
    assert set(data) == {1, 2}
    assert b"\\Flagged" in data[1][b"FLAGS"]
    assert data[1][b"BODY[]"] == msg(1)
    assert data[1][b"RFC822.SIZE"] == len(msg(1))
    assert data[1][b"ENVELOPE"].subject == b"hello 1"
    # PEEK did not set \Seen; BODY[TEXT] does
    assert b"\\Seen" not in c.get_flags([1])[1]
    data = c.fetch([1], ["BODY[TEXT]"])
    assert data[1][b"BODY[TEXT]"] == b"Body text here.\r\n"
    assert b"\\Seen" in c.get_flags([1])[1]
    data = c.fetch([2], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "BODY.PEEK[]<0.4>", "RFC822.HEADER"])
    assert data[2][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() == b"Subject: hello 2"
    assert data[2][b"BODY[]<0>"] == b"From"
    assert data[2][b"RFC822.HEADER"].startswith(b"From: Ann")
    c.logout()


def test_fetch_uid_and_bodystructure(mail_server):
    c = client(mail_server)
    c.append("INBOX", msg(1))
    c.select_folder("INBOX")
    data = c.fetch([1], ["BODYSTRUCTURE", "BODY", "RFC822", "MODSEQ"])
    assert data[1][b"BODYSTRUCTURE"] is not None
    assert data[1][b"RFC822"] == msg(1)
    assert data[1][b"MODSEQ"][0] > 0
    c.logout()


def test_fetch_bad_sequence_is_bad(mail_server):
    c = raw_login(mail_server)
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"f FETCH 5 FLAGS")[-1].startswith(b"f BAD")
    assert c.cmd(b"e FETCH 1:* FLAGS")[-1].startswith(b"e OK")  # empty mailbox: names nothing
    assert c.cmd(b"g FETCH 1 (FLAGS BODY[BOGUS])")[-1].startswith(b"g BAD")
    assert c.cmd(b"h UID FETCH 5 FLAGS")[-1].startswith(b"h OK")  # no such UID: nothing, but OK
    c.close()


def test_store_and_flags(mail_server):
    c = client(mail_server)
    for i in range(3):
        c.append("INBOX", msg(i))
    c.select_folder("INBOX")
    res = c.add_flags([1, 2], [b"\\Deleted", b"$Label"])
    assert b"\\Deleted" in res[1] and b"$Label" in res[2]
    c.remove_flags([2], [b"$Label"])
    assert b"$Label" not in c.get_flags([2])[2]
    c.set_flags([3], [b"\\Answered"])
    assert set(c.get_flags([3])[3]) - {b"\\Recent"} == {b"\\Answered"}
    c.logout()


def test_store_rejects_bad_flags(mail_server):
    c = raw_login(mail_server)
    c.cmd(b"a APPEND INBOX {%d+}\r\n" % len(MSG) + MSG)
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"x STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"x BAD")
    assert c.cmd(b"y STORE 1 +FLAGS (\\Recent)")[-1].startswith(b"y BAD")
    assert c.cmd(b"z STORE 1 WHAT (\\Seen)")[-1].startswith(b"z BAD")
    c.close()


def test_expunge_and_uid_expunge(mail_server):
    c = client(mail_server)
    for i in range(4):
        c.append("INBOX", msg(i))
    c.select_folder("INBOX")
    c.add_flags([1, 2, 3], [b"\\Deleted"])
    res = c.uid_expunge([2])
    assert res
    assert c.search("ALL") == [1, 3, 4]  # imapclient searches by UID
    c.expunge()
    assert c.search("ALL") == [4]
    assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 1
    c.logout()


def test_copy_move_uidplus(mail_server):
    c = client(mail_server)
    c.create_folder("Archive")
    for i in range(3):
        c.append("INBOX", msg(i))
    c.select_folder("INBOX")
    tag = c._imap._command("COPY", "1:2", "Archive")
    typ, data = c._imap._command_complete("COPY", tag)
    assert typ == "OK" and b"COPYUID" in data[0]
    c.move([3], "Archive")
    assert c.search("ALL") == [1, 2]
    assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 3
    with pytest.raises(Exception, match="TRYCREATE"):
        c.copy([1], "Nope")
    c.logout()
    r = raw_login(mail_server)
    r.cmd(b"s SELECT INBOX")
    lines = r.cmd(b"m UID MOVE 1 Archive")
    assert any(b"[COPYUID" in ln and ln.startswith(b"* OK") for ln in lines)
    assert any(ln.endswith(b"EXPUNGE") for ln in lines)
    r.close()


def test_mailbox_management(mail_server):
    c = client(mail_server)
    c.create_folder("Work")
    c.create_folder("Work/Reports")
    names = [f[2] for f in c.list_folders()]
    assert "INBOX" in names and "Work" in names and "Work/Reports" in names
    flags = {f[2]: f[0] for f in c.list_folders()}
    assert b"\\HasChildren" in flags["Work"]
    with pytest.raises(Exception, match="ALREADYEXISTS"):
        c.create_folder("Work")
    c.rename_folder("Work/Reports", "Work/Old")
    assert "Work/Old" in [f[2] for f in c.list_folders("Work/", "%")]
    c.subscribe_folder("Work")
    assert "Work" in [f[2] for f in c.list_sub_folders()]
    c.unsubscribe_folder("Work")
    assert "Work" not in [f[2] for f in c.list_sub_folders()]
    c.delete_folder("Work/Old")
    with pytest.raises(Exception, match="NONEXISTENT"):
        c.select_folder("Work/Old")
    with pytest.raises(Exception, match="CANNOT"):
        c.create_folder("../../etc")
    st = c.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"])
    assert st[b"MESSAGES"] == 0
    assert c.namespace().personal[0][1] == "/"
    c.logout()


def test_utf7_and_utf8_names(mail_server):
    c = client(mail_server)
    c.create_folder("Café")  # imapclient sends modified UTF-7
    assert "Café" in [f[2] for f in c.list_folders()]
    c.logout()
    r = raw_login(mail_server)
    lines = r.cmd(b'a LIST "" "Caf*"')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" Caf&AOk-'
    assert r.cmd(b"b ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    lines = r.cmd(b'c LIST "" "Caf*"')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" "Caf\xc3\xa9"'
    assert r.cmd(b'd SELECT "Caf\xc3\xa9"')[-1].startswith(b"d OK")
    r.close()


def test_list_extended_and_status(mail_server):
    c = raw_login(mail_server)
    c.cmd(b"a CREATE Sent (USE (\\Sent))")
    c.cmd(b"b SUBSCRIBE Sent")
    lines = c.cmd(b'c LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES UIDNEXT))')
    assert any(b"\\Subscribed" in ln and b"Sent" in ln for ln in lines)
    assert any(ln.startswith(b"* STATUS Sent (MESSAGES 0 UIDNEXT 1)") for ln in lines)
    assert lines[-1].startswith(b"c OK")
    lines = c.cmd(b'd LIST "" ""')
    assert lines[0] == b'* LIST (\\Noselect) "/" ""'
    assert c.cmd(b"e STATUS INBOX (BOGUS)")[-1].startswith(b"e BAD")
    assert c.cmd(b"f STATUS Nope (MESSAGES)")[-1].startswith(b"f NO [NONEXISTENT]")
    c.close()


def test_append_errors(mail_server):
    c = raw_login(mail_server)
    lines = c.cmd(b"a APPEND Nope {%d+}\r\n" % len(MSG) + MSG)
    assert lines[-1].startswith(b"a NO [TRYCREATE]")
    lines = c.cmd(b'b APPEND INBOX (\\Seen) "28-Nov-2026 10:00:00 +0100" {%d+}\r\n' % len(MSG) + MSG)
    assert lines[-1].startswith(b"b OK [APPENDUID ")
    assert c.cmd(b'c APPEND INBOX "not a date" {3+}\r\nabc')[-1].startswith(b"c BAD")
    assert c.cmd(b"d APPEND INBOX")[-1].startswith(b"d BAD")
    lines = c.cmd(b'e APPEND INBOX "28-Nov-2026 10:00:00 +0000" UTF8 (~{%d+}\r\n' % len(MSG) + MSG + b")")
    assert lines[-1].startswith(b"e OK [APPENDUID")
    c.cmd(b"s SELECT INBOX")
    lines = c.cmd(b"f FETCH 1 (INTERNALDATE FLAGS)")
    from dovetail.imap.response import parse_date_time

    date = re.search(rb'INTERNALDATE "([^"]+)"', lines[0]).group(1).decode()
    assert parse_date_time(date) == parse_date_time("28-Nov-2026 10:00:00 +0100")  # the instant is kept
    assert b"\\Seen" in lines[0]
    c.close()


def test_search_sort_thread(mail_server):
    c = client(mail_server)
    c.append("INBOX", msg(1, "apple"))
    c.append("INBOX", msg(2, "banana"), flags=[b"\\Seen"])
    c.append("INBOX", msg(3, "Re: apple"))
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "apple"]) == [1, 3]
    assert c.search(["SEEN"]) == [2]
    assert c.search(["NOT", "SEEN"]) == [1, 3]
    assert c._imap.uid("SEARCH", "2:*")[1][0].split() == [b"2", b"3"]
    assert c.sort(["REVERSE", "ARRIVAL"]) == [3, 2, 1]
    assert c.thread("ORDEREDSUBJECT")
    r = raw_login(mail_server)
    r.cmd(b"s SELECT INBOX")
    lines = r.cmd(b"a SEARCH RETURN (MIN MAX COUNT) SUBJECT apple")
    assert lines[0] == b'* ESEARCH (TAG "a") MIN 1 MAX 3 COUNT 2'
    r.cmd(b"b SEARCH RETURN (SAVE) SUBJECT banana")
    lines = r.cmd(b"c FETCH $ (UID)")
    assert lines[0] == b"* 2 FETCH (UID 2)"
    assert r.cmd(b"d SEARCH BOGUSKEY")[-1].startswith(b"d BAD")
    r.close()
    c.logout()


def test_examine_is_readonly(mail_server):
    c = client(mail_server)
    c.append("INBOX", msg(1))
    c.select_folder("INBOX", readonly=True)
    c.fetch([1], ["BODY[]"])
    assert b"\\Seen" not in c.get_flags([1])[1]
    with pytest.raises(Exception, match="READ-ONLY"):
        c.add_flags([1], [b"\\Flagged"])
    c.logout()


def test_close_expunges_unselect_does_not(mail_server):
    c = client(mail_server)
    for i in range(2):
        c.append("INBOX", msg(i))
    c.select_folder("INBOX")
    c.add_flags([1], [b"\\Deleted"])
    c.unselect_folder()
    assert c.select_folder("INBOX")[b"EXISTS"] == 2
    c.close_folder()
    assert c.select_folder("INBOX")[b"EXISTS"] == 1
    c.logout()


def test_enable_id_namespace_unknown(mail_server):
    r = raw_login(mail_server)
    assert r.cmd(b"a ENABLE CONDSTORE QRESYNC")[0] == b"* ENABLED CONDSTORE QRESYNC"
    assert r.cmd(b"b ID NIL")[0].startswith(b'* ID ("name"')
    assert r.cmd(b"c FROB")[-1].startswith(b"c BAD")
    assert r.cmd(b"d FETCH 1 FLAGS")[-1].startswith(b"d BAD")  # nothing selected
    assert r.cmd(b"e UID NOOP")[-1].startswith(b"e BAD")
    r.close()


def test_untagged_updates_between_sessions(mail_server):
    a = raw_login(mail_server)
    b = raw_login(mail_server)
    a.cmd(b"s SELECT INBOX")
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"x APPEND INBOX {%d+}\r\n" % len(MSG) + MSG)
    lines = a.cmd(b"n NOOP")
    assert b"* 1 EXISTS" in lines
    b.cmd(b"y NOOP")
    b.cmd(b"z STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines = a.cmd(b"n2 NOOP")
    assert any(ln.startswith(b"* 1 FETCH (") and b"\\Flagged" in ln for ln in lines)
    b.cmd(b"d STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.cmd(b"e EXPUNGE")
    # no EXPUNGE during FETCH, it comes with the next NOOP
    lines = a.cmd(b"f FETCH 1 (FLAGS)")
    assert not any(ln.endswith(b"EXPUNGE") for ln in lines)
    lines = a.cmd(b"n3 NOOP")
    assert b"* 1 EXPUNGE" in lines
    a.close()
    b.close()


def test_two_sessions_racing_on_flags_and_expunge(mail_server):
    c = client(mail_server)
    for i in range(20):
        c.append("INBOX", msg(i))
    c.logout()
    errors: list[BaseException] = []

    def worker(kind: str) -> None:
        try:
            cl = client(mail_server)
            cl.select_folder("INBOX")
            for _ in range(5):
                if kind == "flags":
                    uids = cl.search("ALL")
                    cl.add_flags(uids, [b"\\Flagged"])
                    cl.remove_flags(uids, [b"\\Flagged"])
                else:
                    uids = cl.search("ALL")
                    if uids:
                        cl.add_flags(uids[:2], [b"\\Deleted"])
                        cl.expunge()
            cl.logout()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("flags", "expunge", "flags")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    c = client(mail_server)
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 10
    assert len(c.search("ALL")) == 10
    c.logout()


def test_imaplib_full_round(mail_server):
    m = imaplib.IMAP4("127.0.0.1", mail_server.port)
    m.login("bob", "builder")
    typ, data = m.append("INBOX", "(\\Seen)", None, MSG)
    assert typ == "OK"
    typ, data = m.select("INBOX")
    assert data == [b"1"]
    typ, data = m.fetch("1", "(RFC822)")
    assert data[0][1] == MSG
    typ, data = m.search(None, "ALL")
    assert data == [b"1"]
    m.close()
    m.logout()


def test_each_login_sees_only_its_own_mailboxes(mail_server):
    a = client(mail_server, "alice")
    a.create_folder("Secret")
    a.append("INBOX", msg(1))
    b = client(mail_server, "bob")
    assert [f[2] for f in b.list_folders()] == ["INBOX"]
    assert b.select_folder("INBOX")[b"EXISTS"] == 0
    for name in ("../alice/Secret", "Secret", "~alice", "/etc"):
        with pytest.raises(Exception, match="NONEXISTENT|CANNOT"):
            b.select_folder(name)
    a.logout()
    b.logout()


def test_uidplus_codes_name_the_real_uids(mail_server):
    c = raw_login(mail_server)
    c.cmd(b"c CREATE Dest")
    uidv = int(re.search(rb"UIDVALIDITY (\d+)", c.cmd(b"s STATUS Dest (UIDVALIDITY)")[0]).group(1))
    lines = c.cmd(b"a APPEND Dest {%d+}\r\n" % len(MSG) + MSG)
    assert lines[-1].startswith(b"a OK [APPENDUID %d 1]" % uidv)
    for i in range(4):
        c.cmd(b"a%d APPEND INBOX {%d+}\r\n" % (i, len(msg(i))) + msg(i))
    c.cmd(b"s SELECT INBOX")
    lines = c.cmd(b"k UID COPY 2,4 Dest")
    m = re.search(rb"\[COPYUID (\d+) (\S+) (\S+)\]", lines[-1])
    assert int(m.group(1)) == uidv
    assert m.group(2) == b"2,4" and m.group(3) == b"2:3"
    c.cmd(b"x SELECT Dest")
    lines = c.cmd(b"f UID FETCH 2:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = re.findall(rb"Subject: (hello \d)", b"".join(lines))
    assert subjects == [b"hello 1", b"hello 3"]  # source UID 2 is msg(1), UID 4 is msg(3)
    c.close()
