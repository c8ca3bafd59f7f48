"""The device sync payload (Control kind 6): contacts and room labels among a user's devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotto.protocol import errors
from sotto.protocol.content import Control, parse_content
from sotto.protocol.device_sync import MAX_ENTRIES, DeviceSync, SyncEntry

CONTACT, LABEL = SyncEntry.CONTACT, SyncEntry.LABEL


def test_entries_round_trip_through_a_control():
    sync = DeviceSync.of(
        [
            SyncEntry(LABEL, "room-0a", "ops", 7),
            SyncEntry(CONTACT, "bob", "usr-b0b", 5),
            SyncEntry(CONTACT, "old friend", "", 6),  # removed
            SyncEntry(LABEL, "room-0b", "", 8),  # cleared
        ]
    )
    control = sync.to_control()
    assert control.kind == Control.DEVICE_SYNC == 6
    parsed = parse_content(control.serialize())
    assert isinstance(parsed, Control)
    assert DeviceSync.from_control(parsed) == sync
    assert [e.op for e in sync.entries] == [1, 2, 3, 4]


def test_the_encoding_is_exact():
    payload = DeviceSync.of([SyncEntry(CONTACT, "bob", "usr-1", 2)]).to_control().payload
    # version 1, one entry: op 1, u64 timestamp 2, text8 "bob", text8 "usr-1"
    assert payload.hex() == "01000101000000000000000203626f62057573722d31"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (bytes.fromhex("020000"), errors.UnsupportedVersion),  # a later version
        (bytes.fromhex("010001050000000000000001016200"), errors.MalformedMessage),
        # a set without a value, a removal with one
        (bytes.fromhex("010001010000000000000001016200"), errors.MalformedMessage),
        (bytes.fromhex("01000102000000000000000101620161"), errors.MalformedMessage),
        (bytes.fromhex("01000000"), errors.MalformedMessage),  # trailing bytes
        (bytes.fromhex("01000201000000000000000101620161"), errors.MalformedMessage),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, error: type[Exception]):
    with pytest.raises(error):
        DeviceSync.from_control(Control(Control.DEVICE_SYNC, payload))


def test_one_entry_per_key_sorted_and_bounded():
    with pytest.raises(errors.MalformedMessage):
        DeviceSync((SyncEntry(CONTACT, "b", "usr-1", 1), SyncEntry(CONTACT, "b", "usr-2", 2)))
    with pytest.raises(errors.MalformedMessage):
        DeviceSync((SyncEntry(LABEL, "room-1", "x", 1), SyncEntry(CONTACT, "b", "usr-2", 2)))
    many = [SyncEntry(CONTACT, f"c{i}", "usr-1", 1) for i in range(MAX_ENTRIES + 1)]
    with pytest.raises(errors.MalformedMessage):
        DeviceSync.of(many)
    # the largest message fits one content (64 KiB padded)
    big = DeviceSync.of(
        [SyncEntry(CONTACT, f"{i:03d}" + "é" * 30, "u" * 64, 2**64 - 1) for i in range(MAX_ENTRIES)]
    )
    assert len(big.to_control().serialize()) < 65535


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        (CONTACT, "", "usr-1"),
        (CONTACT, " ", "usr-1"),
        (CONTACT, "a\nb", "usr-1"),
        (CONTACT, "x" * 65, "usr-1"),
        (CONTACT, "bob", "not an id"),
        (LABEL, "not an id", "ops"),
        (LABEL, "room-1", "o\u202eps"),  # a bidi override
        ("other", "room-1", "ops"),
    ],
)
def test_names_and_ids_are_checked(kind: str, key: str, value: str):
    with pytest.raises(errors.MalformedMessage):
        SyncEntry(kind, key, value, 1)


def test_other_controls_are_not_device_sync():
    with pytest.raises(errors.MalformedMessage):
        DeviceSync.from_control(Control(Control.ROOM_PROFILE, b"\x01\x00\x00"))


def test_the_content_vector_parses_to_its_entries():
    vectors = json.loads((Path(__file__).parent / "vectors" / "content.json").read_text())
    [item] = [v for v in vectors["contents"] if v["name"] == "device sync"]
    control = parse_content(bytes.fromhex(item["content"]))
    assert isinstance(control, Control)
    sync = DeviceSync.from_control(control)
    assert [(e.kind, e.key, e.value) for e in sync.entries] == [
        (CONTACT, "bob", "usr-b0b"),
        (CONTACT, "carol", ""),
        (LABEL, "room-0123456789abcdef01234567", "ops"),
    ]
    assert sync.to_control().serialize().hex() == item["content"]
