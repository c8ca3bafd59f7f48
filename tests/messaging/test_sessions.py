"""Pairwise sessions in the SDK: rotations after the first cost no prekey.

The first distribution to a device goes by HPKE to one of its prekeys and
offers a session; every later rotation to that device goes over the session
(docs/protocol.md §16), so a room's rotations do not drain its members'
one-time prekeys. A device that lost its sessions (a keystore restored from
a backup) asks the sender again, is told which message it cannot read, and
reads the ones sent after the repair.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from sotto.client.events import MessageEvent, NoticeEvent
from sotto.protocol.sessions import PairwiseSessions
from sotto_server.dal.directory import DirectoryStore
from tests.support.people import Seeded, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Sessions"})["network_id"])


def one_time_prekeys(stack: Stack, person: Seeded) -> int:
    directory = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    return directory.count_one_time_prekeys(person.devices[0].device_id)


def texts(events: Sequence[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def test_a_rotation_after_the_first_goes_over_the_session(stack, network, tmp_path: Path):
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.create_room("ops", [bob.user_id, carol.user_id])
        messenger.send_text("#ops", "first chain")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["first chain"]
    before = one_time_prekeys(stack, bob)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.remove_members("#ops", [carol.user_id])  # every sender rotates
        messenger.send_text("#ops", "second chain")
    assert one_time_prekeys(stack, bob) == before  # no prekey of bob's was taken
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["second chain"]


def test_a_device_that_lost_its_sessions_asks_again_and_reads(stack, network, tmp_path: Path):
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    carol = seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.create_room("ops", [bob.user_id, carol.user_id])
        messenger.send_text("#ops", "first chain")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["first chain"]
        assert len(messenger.state.sessions) > 0  # receipts made bob a sender too
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        messenger.state.sessions = PairwiseSessions()  # restored from before the session
        messenger._dirty = True
        messenger.save()
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.remove_members("#ops", [carol.user_id])
        messenger.send_text("#ops", "second chain")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == []  # the session is unknown: bob asks alice
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        shown = messenger.sync()  # answers the request with a distribution by HPKE
    assert not [e for e in shown if isinstance(e, NoticeEvent)]  # the request is not shown
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        events = messenger.sync()
    # The chain came again where alice is now: what bob waited for stays unreadable
    # (its key is gone on both sides), and bob is told so in words.
    assert texts(events) == []
    (lost,) = [e for e in events if isinstance(e, NoticeEvent)]
    assert lost.code == "message_key_unavailable"
    assert "lost its keys" in lost.detail
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "after the repair")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["after the repair"]


def _restore(home: Path, person: Seeded, backup: Path) -> None:
    profile = home / f"p-{person.devices[0].device_id}"
    shutil.rmtree(profile)
    shutil.copytree(backup, profile)


def _backup(home: Path, person: Seeded) -> Path:
    backup = home / f"backup-{person.devices[0].device_id}"
    shutil.copytree(home / f"p-{person.devices[0].device_id}", backup)
    return backup


def test_a_sender_restored_from_a_backup_starts_a_new_chain(stack, network, tmp_path: Path):
    """The server refuses a second message at a chain position (``rolled_back``); the SDK
    drops every sender chain and send session (§14.6) and sends on a new chain."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(bob.user_id, "one")
    backup = _backup(tmp_path, alice)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(bob.user_id, "two")
    _restore(tmp_path, alice, backup)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.resolve(bob.user_id)
        old_chain = messenger._engine(cid).sender_chain_id
        messenger.send_text(bob.user_id, "three")  # the position of "two": refused, then anew
        assert messenger._engine(cid).sender_chain_id != old_chain
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        events = messenger.sync()
    assert texts(events) == ["one", "two", "three"]
    assert not [e for e in events if isinstance(e, NoticeEvent)]


def test_a_session_step_used_again_is_asked_for_again(stack, network, tmp_path: Path):
    """A restored sender reuses a session step in another conversation, where no chain
    position repeats: the recipient asks again (§16.4), is told which message it lost,
    and reads what follows."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(bob.user_id, "direct")  # offers alice->bob a session
        room = messenger.create_room("ops", [bob.user_id])
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["direct"]
    backup = _backup(tmp_path, alice)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(room, "room, over the session")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["room, over the session"]
    _restore(tmp_path, alice, backup)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(room, "room, the same session step again")  # a new chain here
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == []  # the step was used: bob asks alice again
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.sync()  # answers by HPKE
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        events = messenger.sync()
    assert texts(events) == []
    (lost,) = [e for e in events if isinstance(e, NoticeEvent)]
    assert lost.code == "message_key_unavailable"
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text(room, "after the repair")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["after the repair"]
