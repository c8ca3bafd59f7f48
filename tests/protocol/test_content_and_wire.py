"""Content types, padding and the canonical encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sotto.protocol import errors
from sotto.protocol.content import (
    SIZE_BUCKETS,
    CallSignal,
    Control,
    File,
    Location,
    Receipt,
    Text,
    UnknownContent,
    pad,
    parse_content,
    unpad,
)
from sotto.protocol.wire import MessageType, Reader, Writer, parse_prefix

ids = st.binary(min_size=16, max_size=16)
contents = st.one_of(
    st.builds(Text, st.text(max_size=200)),
    st.builds(
        File,
        st.from_regex(r"[a-z0-9/-]{1,40}", fullmatch=True),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=48, max_size=48),
        st.integers(0, 2**64 - 1),
        st.text(max_size=50),
        st.sampled_from(["image/png", "application/pdf", ""]),
    ),
    st.builds(
        Location,
        st.integers(-900_000_000, 900_000_000),
        st.integers(-1_800_000_000, 1_800_000_000),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**64 - 1),
        st.text(max_size=60),
    ),
    st.builds(Receipt, st.sampled_from([1, 2]), st.lists(ids, min_size=1, max_size=5).map(tuple)),
    st.builds(Control, st.integers(1, 255), st.binary(max_size=100)),
    st.builds(CallSignal, ids, st.sampled_from([1, 2, 3, 4]), st.text(max_size=100)),
)


@given(contents)
def test_every_content_type_round_trips_through_padding(content):
    size_class, padded = pad(content.serialize())
    assert len(padded) == SIZE_BUCKETS[size_class]
    assert parse_content(unpad(padded)) == content


@given(st.binary(max_size=SIZE_BUCKETS[-1] - 1))
def test_padding_round_trips_any_bytes(data: bytes):
    assert unpad(pad(data)[1]) == data


def test_content_too_large_for_the_largest_bucket_is_refused():
    with pytest.raises(errors.LimitExceeded):
        pad(bytes(SIZE_BUCKETS[-1]))


def test_bad_padding_is_malformed():
    with pytest.raises(errors.MalformedMessage):
        unpad(bytes(256))


def test_unknown_content_type_is_kept_verbatim():
    content = parse_content(b"\x7fnew stuff")
    assert content == UnknownContent(0x7F, b"new stuff")
    assert content.serialize() == b"\x7fnew stuff"


def test_content_with_trailing_bytes_is_malformed():
    with pytest.raises(errors.MalformedMessage):
        parse_content(Location(0, 0, 0, 0).serialize() + b"\x00")


def test_location_label_has_one_encoding():
    plain = Location(1, 2, 3, 4).serialize()
    assert Location(1, 2, 3, 4, "").serialize() == plain
    with pytest.raises(errors.MalformedMessage):
        parse_content(plain + b"\x00\x00")  # an empty label encoded instead of omitted
    with pytest.raises(errors.LimitExceeded):
        Location(0, 0, 0, 0, "x" * 257)


def test_invalid_content_cannot_be_constructed():
    with pytest.raises(errors.MalformedMessage):
        Location(900_000_001, 0, 0, 0)
    with pytest.raises(errors.MalformedMessage):
        Receipt(3, (bytes(16),))
    with pytest.raises(errors.MalformedMessage):
        CallSignal(bytes(15), 1, "")


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1), st.text(max_size=50))
def test_writer_and_reader_agree(blob: bytes, number: int, text: str):
    data = bytes(Writer().prefix(MessageType.ENVELOPE).var16(blob).u32(number).text8(text))
    r = Reader(data, "test")
    parse_prefix(r, MessageType.ENVELOPE)
    assert (r.var16(), r.u32(), r.text8()) == (blob, number, text)
    r.done()


@given(st.binary(max_size=200))
def test_reader_never_raises_anything_but_malformed(data: bytes):
    def parse() -> None:
        r = Reader(data, "fuzz")
        parse_prefix(r, MessageType.ENVELOPE)
        r.var16()
        r.text8()
        r.var32()
        r.done()
        raise errors.MalformedMessage("parsed fully")  # also acceptable: still malformed type

    with pytest.raises(errors.MalformedMessage):
        parse()


def test_prefix_rejects_wrong_type():
    data = bytes(Writer().prefix(MessageType.ENVELOPE))
    with pytest.raises(errors.MalformedMessage):
        parse_prefix(Reader(data, "x"), MessageType.KEY_DISTRIBUTION)
