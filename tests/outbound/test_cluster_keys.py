"""Two nodes of a PostgreSQL cluster sign with the same DKIM keys and open the same sealed credentials,
given one master key and no key files copied (``dovetail.vault``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.db import make_engine
from dovetail.outbound.keys import DkimKeyError, DkimKeys, DkimKeyUnavailable
from dovetail.outbound.schema import dkim_keys
from dovetail.vault import ENV, MASTER_RELPATH, credentials_sealer

from .conftest import make_world


@pytest.fixture
def nodes(tmp_path: Path, pg_cluster: object, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Node A (its world made the cluster's database) and node B's data directory, one engine each."""
    monkeypatch.delenv(ENV, raising=False)
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    world = make_world(tmp_path / "a", url)
    (tmp_path / "b").mkdir()
    b_engine = make_engine(url)
    yield tmp_path / "a", tmp_path / "b", world.engine, b_engine
    world.engine.dispose()
    b_engine.dispose()


def store(root: Path, engine: sa.Engine) -> DkimKeys:
    return DkimKeys(engine, root / "dkim", check_interval=0)


def public_keys(keys: list) -> list[bytes]:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return [k.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo) for k in keys]


def test_a_second_node_signs_with_the_keys_the_first_made_and_follows_a_rotation(nodes) -> None:  # noqa: ANN001
    a, b, a_engine, b_engine = nodes
    made = store(a, a_engine).ensure("acme.example")
    assert len(made) == 2
    assert not (a / "dkim").exists()  # sealed in the database, no key file
    assert (a / MASTER_RELPATH).is_file()  # the cluster's first node made the master key
    # B without the master key: its mail waits, and the reason says what to do.
    with pytest.raises(DkimKeyUnavailable, match="no cluster master key"):
        store(b, b_engine).signing_keys("acme.example")
    # B with another key is told it is not the cluster's.
    (b / "secrets").mkdir()
    (b / MASTER_RELPATH).write_text("11" * 32 + "\n")
    with pytest.raises(DkimKeyUnavailable, match="is not the cluster's"):
        store(b, b_engine).signing_keys("acme.example")
    # Given the one master key, B signs with A's keys.
    shutil.copy(a / MASTER_RELPATH, b / MASTER_RELPATH)
    a_keys, b_store = store(a, a_engine), store(b, b_engine)
    assert public_keys(b_store.signing_keys("acme.example")) == public_keys(a_keys.signing_keys("acme.example"))
    assert [k.selector for k in b_store.signing_keys("acme.example")] == [k.selector for k in made]
    # A rotation on A (rotate, activate) is what B signs with next; retire leaves B nothing stale.
    new = a_keys.rotate("acme.example")
    a_keys.activate("acme.example")
    assert [k.selector for k in b_store.signing_keys("acme.example")] == [k.selector for k in new]
    assert public_keys(b_store.signing_keys("acme.example")) == public_keys(a_keys.signing_keys("acme.example"))
    assert {k.selector for k in b_store.retire("acme.example")} == {k.selector for k in made}
    assert {k.selector for k in a_keys.list("acme.example")} == {k.selector for k in new}


def test_the_master_key_may_come_from_the_environment(nodes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    a, b, a_engine, b_engine = nodes
    store(a, a_engine).ensure("acme.example")
    monkeypatch.setenv(ENV, (a / MASTER_RELPATH).read_text().strip())
    assert len(store(b, b_engine).signing_keys("acme.example")) == 2
    monkeypatch.setenv(ENV, "not hex")
    with pytest.raises(DkimKeyUnavailable, match=ENV):
        store(b, b_engine).signing_keys("acme.example")


def test_a_key_file_from_before_the_cluster_is_sealed_for_every_node(nodes) -> None:  # noqa: ANN001
    a, b, a_engine, b_engine = nodes
    a_keys = store(a, a_engine)
    made = a_keys.ensure("acme.example")
    # As an installation that moved from SQLite has it: the private keys are files, the rows hold none.
    for key in made:
        pem = a_keys._load(key.domain, key.selector, a_keys._sealed(key.domain, key.selector))
        from cryptography.hazmat.primitives import serialization

        path = a_keys.key_path(key.domain, key.selector)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    with a_engine.begin() as conn:
        conn.execute(dkim_keys.update().values(private_key=None))
    shutil.copytree(a / "secrets", b / "secrets")
    a_keys, b_store = store(a, a_engine), store(b, b_engine)
    assert len(a_keys.signing_keys("acme.example")) == 2  # A reads its files meanwhile
    with pytest.raises(DkimKeyUnavailable):  # B has no such file
        b_store.signing_keys("acme.example")
    assert a_keys.import_files() == 2
    assert a_keys.import_files() == 0
    assert public_keys(b_store.signing_keys("acme.example")) == public_keys(a_keys.signing_keys("acme.example"))


def test_credentials_sealed_on_one_node_open_on_another(nodes) -> None:  # noqa: ANN001
    a, b, a_engine, b_engine = nodes
    # A sealed credentials with its own key before it joined the cluster: they stay readable.
    from dovetail.sealing import Sealer

    before = Sealer.for_data_dir(a).seal("relay-password", "relay")
    sealed = credentials_sealer(a, a_engine).seal("imap-password", "imap")
    assert credentials_sealer(a, a_engine).open(before, "relay") == "relay-password"
    # B, with the master key only (no credentials.key of its own), opens both.
    (b / "secrets").mkdir()
    shutil.copy(a / MASTER_RELPATH, b / MASTER_RELPATH)
    b_sealer = credentials_sealer(b, b_engine)
    assert b_sealer.open(sealed, "imap") == "imap-password"
    assert b_sealer.open(before, "relay") == "relay-password"
    assert not (b / "secrets" / "credentials.key").exists()
    # Nothing in the database opens without the master key: a sealer on a node without it says so.
    (b / MASTER_RELPATH).unlink()
    with pytest.raises(RuntimeError, match="no cluster master key"):
        credentials_sealer(b, b_engine).open(sealed, "imap")


def test_rotation_refusals_stay_the_same_on_a_cluster(nodes) -> None:  # noqa: ANN001
    a, _b, a_engine, _ = nodes
    a_keys = store(a, a_engine)
    a_keys.ensure("acme.example")
    a_keys.rotate("acme.example")
    with pytest.raises(DkimKeyError, match="already has published keys"):
        a_keys.rotate("acme.example")


def test_reply_tokens_and_srs_addresses_made_on_one_node_verify_on_another(nodes) -> None:  # noqa: ANN001
    from dovetail.directory.srs import Srs, SrsError
    from dovetail.replies import tokens

    a, b, a_engine, b_engine = nodes
    a_secret = tokens.load_secret(a, a_engine)
    token = tokens.new_token(a_secret, 7)
    forwarded = Srs.for_data_dir(a, engine=a_engine).forward("alice@gmail.example", "alias.example").split("@")[0]
    # B is not given the master key yet: the SRS secret is asked for only when used, and then refused
    b_srs = Srs.for_data_dir(b, engine=b_engine)
    with pytest.raises(Exception, match="master key"):
        b_srs.reverse(forwarded)
    (b / "secrets").mkdir(exist_ok=True)
    shutil.copy(a / MASTER_RELPATH, b / MASTER_RELPATH)
    assert tokens.verify_token(tokens.load_secret(b, b_engine), 7, token)
    assert not (b / "secrets" / "reply_token.key").exists()  # the cluster's, not a file of b's own
    assert Srs.for_data_dir(b, engine=b_engine).reverse(forwarded) == "alice@gmail.example"
    with pytest.raises(SrsError):
        Srs(b"another installation").reverse(forwarded)
