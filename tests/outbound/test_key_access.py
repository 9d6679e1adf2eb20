"""Key files the services can load, and what happens when they cannot: never a silent unsigned message."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail.outbound.keys import DkimKeys, DkimKeyUnavailable, repair_key_files
from dovetail.privileges import ensure_system_user

from .conftest import World, make_world

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")


def service_ids() -> tuple[int, int]:
    return ensure_system_user("dovetail")


@pytest.fixture
def open_world() -> Iterator[World]:
    """A world where the service user can reach the data directory (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="dovetail-keys-"))
    base.chmod(0o755)
    world = make_world(base / "data", f"sqlite:///{base / 'dovetail.db'}")
    world.root.chmod(0o755)
    yield world
    world.engine.dispose()
    shutil.rmtree(base, ignore_errors=True)


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_a_missing_active_key_stops_signing_instead_of_signing_with_the_rest(world) -> None:
    store = DkimKeys(world.engine, world.dkim_dir, cache_ttl=0)
    rsa_key, ed_key = store.ensure("acme.example")
    assert len(store.signing_keys("acme.example")) == 2
    store.key_path("acme.example", ed_key.selector).unlink()
    with pytest.raises(DkimKeyUnavailable) as caught:
        store.signing_keys("acme.example")
    assert str(caught.value).startswith("DKIM key for acme.example unreadable: ")
    assert caught.value.reason.endswith(f"{ed_key.selector}.key: No such file or directory")
    [_, broken] = store.list("acme.example", check=True)
    assert broken.selector == ed_key.selector
    assert broken.status == f"active (unreadable: {caught.value.reason})"
    assert store.list("acme.example", check=True)[0].status == "active"  # the RSA key is fine
    assert store.signing_keys("globex.example") == []  # no keys at all: nothing to wait for


def test_a_damaged_key_is_reported_and_a_repaired_one_signs_again_at_once(world) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)  # the default cache: failures are not cached
    rsa_key, _ = store.ensure("acme.example")
    path = store.key_path("acme.example", rsa_key.selector)
    good = path.read_bytes()
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyUnavailable, match="not a usable private key"):
        store.signing_keys("acme.example")
    assert "not a usable private key" in (store.list("acme.example", check=True)[0].problem or "")
    path.write_bytes(good)
    assert len(store.signing_keys("acme.example")) == 2


def test_retiring_keys_are_not_checked_and_published_ones_are(world) -> None:
    store = DkimKeys(world.engine, world.dkim_dir, cache_ttl=0)
    old = store.ensure("acme.example")
    new = store.rotate("acme.example")
    store.key_path("acme.example", new[0].selector).unlink()
    by = {k.selector: k for k in store.list("acme.example", check=True)}
    assert by[new[0].selector].status.startswith("published (unreadable: ")
    assert len(store.signing_keys("acme.example")) == 2  # the active pair still signs
    store.key_path("acme.example", new[0].selector).write_bytes(
        store.key_path("acme.example", old[0].selector).read_bytes())
    store.activate("acme.example")
    store.key_path("acme.example", old[1].selector).unlink()
    assert all(k.problem is None for k in store.list("acme.example", check=True))  # retiring: not used


@as_root
def test_keys_written_by_root_belong_to_the_service_user(open_world: World) -> None:
    world = open_world
    uid, gid = service_ids()
    store = DkimKeys(world.engine, world.dkim_dir, owner=(uid, gid))
    made = store.ensure("acme.example")
    assert owner_and_mode(world.dkim_dir) == (uid, gid, 0o700)
    assert owner_and_mode(world.dkim_dir / "acme.example") == (uid, gid, 0o700)
    for k in made:
        assert owner_and_mode(store.key_path("acme.example", k.selector)) == (uid, gid, 0o600)
    assert [k.problem for k in store.list(check=True)] == [None, None]
    assert not [p for p in (world.dkim_dir / "acme.example").iterdir() if p.suffix != ".key"]  # no leftovers


@as_root
def test_root_judges_readability_as_the_service_user_would(open_world: World) -> None:
    world = open_world
    uid, gid = service_ids()
    store = DkimKeys(world.engine, world.dkim_dir, owner=(uid, gid))
    rsa_key, _ = store.ensure("acme.example")
    path = store.key_path("acme.example", rsa_key.selector)
    os.chown(path, 0, 0)  # root can still read it; the services cannot
    [first, second] = store.list("acme.example", check=True)
    assert first.problem == f"{path}: Permission denied (owner root, mode 0600)"
    assert second.problem is None
    os.chown(world.dkim_dir / "acme.example", 0, 0)  # a folder the service user cannot enter
    assert "cannot enter" in (store.list("acme.example", check=True)[1].problem or "")


@as_root
def test_repair_gives_key_files_back_to_the_service_user(open_world: World) -> None:
    world = open_world
    uid, gid = service_ids()
    store = DkimKeys(world.engine, world.dkim_dir)  # written by root, as before keys had an owner
    rsa_key, ed_key = store.ensure("acme.example")
    rsa_path = store.key_path("acme.example", rsa_key.selector)
    ed_path = store.key_path("acme.example", ed_key.selector)
    os.chmod(ed_path, 0o000)
    os.chmod(world.dkim_dir / "acme.example", 0o755)
    changed = dict(repair_key_files(world.dkim_dir, (uid, gid)))
    assert changed[ed_path] == ["owner root -> dovetail", "mode 0000 -> 0600"]
    assert changed[rsa_path] == ["owner root -> dovetail"]
    assert changed[world.dkim_dir / "acme.example"] == ["owner root -> dovetail", "mode 0755 -> 0700"]
    for path in (rsa_path, ed_path):
        assert owner_and_mode(path) == (uid, gid, 0o600)
    assert repair_key_files(world.dkim_dir, (uid, gid)) == []  # nothing left to do
    checked = DkimKeys(world.engine, world.dkim_dir, owner=(uid, gid)).list(check=True)
    assert [k.problem for k in checked] == [None, None]


@as_root
def test_a_fresh_data_directory_needs_no_dkim_repair(tmp_path: Path) -> None:
    """``init`` makes the key store as ``serve`` wants it, so a first start warns about nothing."""
    from dovetail.datadir import Layout, init

    os.chmod(tmp_path, 0o755)  # the service user walks into the data directory
    init(tmp_path / "data")
    uid, gid = service_ids()
    dkim = Layout(tmp_path / "data").dkim
    assert owner_and_mode(dkim) == (uid, gid, 0o700)
    assert repair_key_files(dkim, (uid, gid)) == []
