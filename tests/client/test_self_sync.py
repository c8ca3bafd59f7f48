"""The merge rules of contacts and room labels shared among a user's devices (no I/O)."""

from __future__ import annotations

import itertools

from sotto.client.self_sync import CONTACT, LABEL, Register, SyncBook
from sotto.client.store import MessagingState
from sotto.protocol.device_sync import SyncEntry


def test_newest_change_wins_per_key_in_any_order():
    changes = [
        SyncEntry(CONTACT, "bob", "usr-1", 10),
        SyncEntry(CONTACT, "bob", "usr-2", 30),
        SyncEntry(CONTACT, "bob", "", 20),  # removed before the newest set
        SyncEntry(LABEL, "room-1", "ops", 5),
        SyncEntry(LABEL, "room-1", "", 6),  # then cleared
    ]
    outcomes = set()
    for order in itertools.permutations(changes):
        book = SyncBook()
        for change in order:
            book.merge((change,), sent_at=100)
        outcomes.add((tuple(book.contacts_view().items()), tuple(book.labels_view().items())))
    assert outcomes == {((("bob", "usr-2"),), (("room-1", None),))}


def test_same_time_is_decided_by_value_on_every_device():
    a, b = SyncBook(), SyncBook()
    first, second = SyncEntry(CONTACT, "bob", "usr-1", 9), SyncEntry(CONTACT, "bob", "usr-2", 9)
    a.merge((first,), sent_at=9)
    a.merge((second,), sent_at=9)
    b.merge((second,), sent_at=9)
    b.merge((first,), sent_at=9)
    assert a.contacts_view() == b.contacts_view() == {"bob": "usr-2"}


def test_a_change_is_no_newer_than_its_envelope():
    book = SyncBook()
    book.merge((SyncEntry(CONTACT, "bob", "usr-far-future", 2**60),), sent_at=1000)
    assert book.registers[(CONTACT, "bob")] == Register(1000, "usr-far-future")
    book.merge((SyncEntry(CONTACT, "bob", "usr-later", 1001),), sent_at=1001)
    assert book.contacts_view() == {"bob": "usr-later"}


def test_a_local_change_beats_what_this_device_has_seen():
    book = SyncBook()
    book.merge((SyncEntry(CONTACT, "bob", "usr-1", 500),), sent_at=500)  # another clock ahead
    entry = book.record(CONTACT, "bob", "usr-2", now=400)
    assert entry.timestamp == 501
    assert book.contacts_view() == {"bob": "usr-2"}
    assert book.unsent == {(CONTACT, "bob")}
    # what another device sends later, older than ours, leaves ours (and it stays unsent)
    assert not book.merge((SyncEntry(CONTACT, "bob", "usr-3", 450),), sent_at=450)
    assert book.unsent == {(CONTACT, "bob")}
    # a newer one replaces it: nothing of ours is left to send
    assert book.merge((SyncEntry(CONTACT, "bob", "usr-3", 600),), sent_at=600)
    assert book.unsent == set()


def test_a_label_names_one_room_the_newest_holder():
    book = SyncBook()
    book.merge(
        (SyncEntry(LABEL, "room-a", "ops", 10), SyncEntry(LABEL, "room-b", "ops", 20)), sent_at=20
    )
    assert book.labels_view() == {"room-a": None, "room-b": "ops"}
    book.merge((SyncEntry(LABEL, "room-b", "dev", 30),), sent_at=30)
    assert book.labels_view() == {"room-a": "ops", "room-b": "dev"}


def test_earlier_contacts_are_adopted_at_time_zero_and_lose_to_any_change():
    book = SyncBook()
    book.adopt({"bob": "usr-1", "bad\nname": "usr-2"}, {"room-1": "ops"})
    assert book.entries() == [
        SyncEntry(CONTACT, "bob", "usr-1", 0),
        SyncEntry(LABEL, "room-1", "ops", 0),
    ]
    book.merge((SyncEntry(CONTACT, "bob", "", 1),), sent_at=1)
    assert book.contacts_view() == {}


def test_the_book_is_kept_with_the_device_state():
    state = MessagingState()
    state.sync.record(CONTACT, "bob", "usr-1", now=5)
    state.sync.record(LABEL, "room-1", "ops", now=6)
    state.sync.shared_with.add("dev-2")
    state.sync.owed.add("dev-3")
    state.sync.announced = True
    again = MessagingState()
    again.load_device_part(state.device_part())
    assert again.sync == state.sync
    # a device state written before device sync has an empty book
    old = MessagingState()
    raw = state.device_part().replace(b',"sync":', b',"x":')
    old.load_device_part(raw)
    assert old.sync == SyncBook()
