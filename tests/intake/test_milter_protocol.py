"""The milter codec: packets built as libmilter lays them out, and a parser that turns any byte
stream into packets, typed replies or ``ProtocolError``, never another exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.intake.milter import protocol as p
from dovetail.intake.milter.client import parse_milter


def test_packets_carry_length_command_and_nul_terminated_fields() -> None:
    assert p.helo("mail.example") == struct.pack(">I", 14) + b"Hmail.example\0"
    assert p.mail("a@b.example", ["SIZE=10"]) == struct.pack(">I", 23) + b"M<a@b.example>\0SIZE=10\0"
    assert p.connect("host.example", "192.0.2.1", 25) == (
        struct.pack(">I", 1 + 13 + 1 + 2 + 10) + b"Chost.example\x004" + struct.pack(">H", 25) + b"192.0.2.1\0")
    assert p.connect("h", "2001:db8::1", 25)[4 + 1 + 2] == ord("6")
    assert p.optneg()[5:] == struct.pack(">III", 6, p.ACTIONS_OFFERED, p.STEPS_OFFERED)
    assert p.header("X-A", "b\0c") == struct.pack(">I", 9) + b"LX-A\0b c\0"


def test_body_is_cut_into_chunks_of_at_most_65535_bytes() -> None:
    chunks = p.body_chunks(b"x" * 140000)
    assert [len(c) - 5 for c in chunks] == [65535, 65535, 140000 - 2 * 65535]


def test_replies_decode_to_typed_values() -> None:
    assert p.decode_response(b"c", b"") == p.Simple("continue")
    assert p.decode_response(b"y", b"554 5.7.1 Spam here\0") == p.ReplyCode(554, "5.7.1", "Spam here")
    assert p.decode_response(b"y", b"451 later\0") == p.ReplyCode(451, "4.7.1", "later")
    assert p.decode_response(b"h", b"X-Spam\0Yes\0") == p.HeaderEdit("add", "X-Spam", "Yes")
    assert p.decode_response(b"m", struct.pack(">I", 2) + b"Subject\0\0") == p.HeaderEdit("change", "Subject", "", 2)
    assert p.decode_response(b"i", struct.pack(">I", 0) + b"X-A\0v\n\tw\0") == p.HeaderEdit("insert", "X-A",
                                                                                           "v\n\tw", 0)
    assert p.decode_response(b"q", b"virus\0") == p.Quarantine("virus")


@pytest.mark.parametrize("command,data", [
    (b"y", b"250 ok\0"),  # a success code is no refusal
    (b"y", b"554 no terminator"),
    (b"h", b"Bad Name\0v\0"),
    (b"h", b"X-A\0line\nnot folded\0"),
    (b"c", b"extra"),
    (b"i", b"\0\0"),
    (b"Z", b""),
])
def test_malformed_replies_are_protocol_errors(command: bytes, data: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_response(command, data)


def test_decoder_reassembles_packets_split_anywhere() -> None:
    stream = p.packet(b"h", b"X-A\0b\0") + p.packet(b"c")
    for cut in range(len(stream) + 1):
        dec = p.Decoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert got == [(b"h", b"X-A\0b\0"), (b"c", b"")]


@pytest.mark.parametrize("length", [0, p.MAX_PACKET + 1])
def test_decoder_refuses_impossible_lengths(length: int) -> None:
    with pytest.raises(p.ProtocolError):
        p.Decoder().feed(struct.pack(">I", length) + b"c")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_any_byte_stream_gives_packets_or_protocol_error(chunks: list[bytes]) -> None:
    dec = p.Decoder()
    try:
        for chunk in chunks:
            for command, data in dec.feed(chunk):
                assert len(command) == 1
                try:
                    p.decode_response(command, data)
                except p.ProtocolError:
                    pass
    except p.ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(b"cartdspyhimqOZ"), st.binary(max_size=80))
def test_any_reply_payload_decodes_or_is_a_protocol_error(command: int, data: bytes) -> None:
    try:
        reply = p.decode_response(bytes([command]), data)
    except p.ProtocolError:
        return
    if isinstance(reply, p.ReplyCode):
        assert 400 <= reply.code < 600
    if isinstance(reply, p.HeaderEdit):
        assert reply.name and ":" not in reply.name


@pytest.mark.parametrize("text,host,port,path", [
    ("inet:127.0.0.1:11332", "127.0.0.1", 11332, ""),
    ("inet:[::1]:8891", "::1", 8891, ""),
    ("localhost:8891", "localhost", 8891, ""),
    ("unix:/run/milter.sock", "", 0, "/run/milter.sock"),
])
def test_milter_addresses_in_postfix_notation(text: str, host: str, port: int, path: str) -> None:
    spec = parse_milter(text)
    assert (spec.host, spec.port, spec.path) == (host, port, path)


@pytest.mark.parametrize("text", ["inet:host", "unix:relative", "inet:h:0", "inet:h:99999"])
def test_bad_milter_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_milter(text)
