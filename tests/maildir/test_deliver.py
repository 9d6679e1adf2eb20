"""The Maildir delivery writer: LF conversion, deterministic names, finding an earlier copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.maildir.deliver import delivery_name, find_delivered, lf_chunks, write_message
from dovetail.storage.api import DeliveryId


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"\r\n")), max_size=8))
def test_lf_conversion_across_chunks(chunks: list[bytes]) -> None:
    joined = b"".join(chunks)
    assert b"".join(lf_chunks(chunks)) == joined.replace(b"\r\n", b"\n")


def test_find_delivered_finds_recent_and_moved_copies(tmp_path: Path) -> None:
    box = tmp_path / "box"
    base = delivery_name(DeliveryId("QID123", 0, 1700000000.0))
    path = write_message(box, [b"Subject: x\n\nbody\n"], base)
    assert find_delivered(box, base) == path
    moved = box / "cur" / (path.name + ":2,S")
    os.rename(path, moved)
    assert find_delivered(box, base) == moved
    os.unlink(moved)
    assert find_delivered(box, base) is None


def test_delivery_name_is_deterministic_and_refuses_path_tricks() -> None:
    one = delivery_name(DeliveryId("0ABC", 2, 1700000000.9))
    assert one == delivery_name(DeliveryId("0ABC", 2, 1700000000.1))
    assert one.startswith("1700000000.V0ABCR2.")
    for qid in ("../x", "a/b", "", "A,S=1"):
        with pytest.raises(ValueError):
            delivery_name(DeliveryId(qid, 0, 1.0))


def test_flagged_delivery_goes_to_cur_with_its_info(tmp_path: Path) -> None:
    path = write_message(tmp_path / "box", [b"a\nb\n"], info="FS")
    assert path.parent.name == "cur" and path.name.endswith(",S=4,W=6:2,FS")
    assert os.listdir(tmp_path / "box" / "tmp") == []
