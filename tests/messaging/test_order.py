"""Delivery in order, whatever the pushes do (issue 14, item 12: the causes a soak found).

Each device under test talks through a ``Tap``: the real session to the local
stack, with a hand on its pushes (dropped, waited for, injected) and on its
answers, so the race each test is about happens every time, not sometimes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from sotto.client import delivery
from sotto.client.errors import FrameError
from sotto.client.events import Event, MessageEvent, NoticeEvent
from sotto.client.messenger import Messenger
from sotto.client.prekeys import ONE_TIME_TARGET
from sotto.client.session import Session
from tests.support.people import Seeded, messenger_for, seed_person, server_of
from tests.support.stack import SeededDevice, Stack, admin

Frame = dict[str, Any]


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Order"})["network_id"])


class Tap(Session):
    """A real session whose pushes and answers a test can hold, drop or change."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self.drop: Callable[[Frame], bool] = lambda frame: False
        self.rewrite_sync: Callable[[list[Frame]], list[Frame]] = lambda parts: parts
        self.fail_sync = 0  # this many sync requests are refused (internal_error)
        self.fail_ack = 0  # and this many acks

    def next_push(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            frame = super().next_push(max(deadline - time.monotonic(), 0.0))
            if frame is None or not self.drop(frame):
                return frame

    def request_parts(self, action: str, **fields: Any) -> list[Frame]:
        if action == "sync" and self.fail_sync:
            self.fail_sync -= 1
            raise FrameError("sync", "internal_error", "the server failed (injected)")
        if action == "ack" and self.fail_ack:
            self.fail_ack -= 1
            raise FrameError("ack", "internal_error", "the server failed (injected)")
        parts = super().request_parts(action, **fields)
        return self.rewrite_sync(parts) if action == "sync" else parts

    def wait_for(self, wanted: Callable[[Frame], bool], timeout: float = 15.0) -> None:
        """Read pushes (kept for the next poll) until one is ``wanted``."""
        deadline = time.monotonic() + timeout
        kept = list(self.pushes)
        self.pushes.clear()  # next_push hands out kept frames first: read the socket
        while not any(wanted(frame) for frame in kept):
            assert time.monotonic() < deadline, f"no such push; kept {kept}"
            frame = self.next_push(0.2)
            if frame is not None:
                kept.append(frame)
        self.pushes.extend(kept)


def tapped(stack: Stack, home: Path, device: SeededDevice) -> tuple[Messenger, list[Tap]]:
    """A device's Messenger over Taps; the list holds every session it opened, newest last."""
    taps: list[Tap] = []
    assert device.secrets is not None

    def connect() -> Tap:
        assert device.secrets is not None
        tap = Tap.open(server_of(stack), device.device_id, device.secrets.signing_key)
        taps.append(tap)
        return tap

    return messenger_for(stack, home, device, connect=connect), taps


def texts(events: Sequence[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def message_push(seq: int) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("action") == "message" and frame.get("seq") == seq


def room(stack: Stack, home: Path, owner: Seeded, others: list[Seeded], label: str) -> str:
    with messenger_for(stack, home, owner.devices[0]) as messenger:
        cid = messenger.create_room(label, [p.user_id for p in others])
        messenger.send_text(cid, f"{label} opens")
    return cid


def test_a_push_above_a_gap_waits_for_the_gap(stack, network, tmp_path: Path):
    """The push of "one" is lost; "two" arrives live. "two" is not shown before "one"."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    cid = room(stack, tmp_path, alice, [bob], "gap")
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with b1, messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        assert texts(b1.sync()) == ["gap opens"]
        one = a1.send_text(cid, "one")
        taps[-1].drop = message_push(one.seq)  # a push lost on the way
        two = a1.send_text(cid, "two")
        taps[-1].wait_for(message_push(two.seq))

        events = b1.poll(5)
        assert texts(events) == ["one", "two"]
        seqs = [e.seq for e in events if isinstance(e, MessageEvent)]
        assert seqs == [one.seq, two.seq]
        assert texts(b1.poll(0.5) + b1.sync()) == []


def test_a_batch_is_shown_in_seq_order_whatever_the_server_times(stack, network, tmp_path):
    """Concurrent sends: the server stamps the time before it picks the seq."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    cid = room(stack, tmp_path, alice, [bob], "times")
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with b1, messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        assert texts(b1.sync()) == ["times opens"]
        first, second = a1.send_text(cid, "first"), a1.send_text(cid, "second")

        def swap_times(parts: list[Frame]) -> list[Frame]:
            # As two sends racing would leave them: the later seq has the earlier time.
            for part in parts:
                found = {m["seq"]: m for m in part.get("messages") or []}
                if first.seq in found and second.seq in found:
                    earlier = found[first.seq]["server_time"]
                    found[first.seq]["server_time"] = found[second.seq]["server_time"]
                    found[second.seq]["server_time"] = earlier - 1
            return parts

        taps[-1].rewrite_sync = swap_times
        events = b1.sync()
    assert texts(events) == ["first", "second"]
    assert [e.seq for e in events if isinstance(e, MessageEvent)] == [first.seq, second.seq]


def test_a_reopened_device_shows_what_it_missed_before_what_is_live(stack, network, tmp_path):
    """Closed, it missed a message in one room; opened, a live push comes in another."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    quiet, busy = (room(stack, tmp_path, alice, [bob], label) for label in ("quiet", "busy"))
    with messenger_for(stack, tmp_path, bob.devices[0]) as b1:
        assert sorted(texts(b1.sync())) == ["busy opens", "quiet opens"]
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        a1.send_text(quiet, "missed while closed")
        b1, taps = tapped(stack, tmp_path, bob.devices[0])
        with b1:
            b1.conversations()  # the socket is open: pushes reach it from now on
            live = a1.send_text(busy, "live")
            taps[-1].wait_for(message_push(live.seq))
            events = b1.poll(5)
    assert texts(events) == ["missed while closed", "live"]


def test_a_sync_that_failed_is_done_before_any_push_is_shown(stack, network, tmp_path):
    """The first sync of a listener fails (the server had a bad moment): the next poll
    syncs first, so what was missed still comes before what is live."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    quiet, busy = (room(stack, tmp_path, alice, [bob], label) for label in ("quiet", "busy"))
    with messenger_for(stack, tmp_path, bob.devices[0]) as b1:
        assert sorted(texts(b1.sync())) == ["busy opens", "quiet opens"]
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        a1.send_text(quiet, "missed while closed")
        b1, taps = tapped(stack, tmp_path, bob.devices[0])
        with b1:
            b1.conversations()
            taps[-1].fail_sync = 1
            with pytest.raises(FrameError):
                b1.sync()
            live = a1.send_text(busy, "live")
            taps[-1].wait_for(message_push(live.seq))
            events = b1.poll(5)
    assert texts(events) == ["missed while closed", "live"]


def key_arrives_late(stack: Stack, network: str, tmp_path: Path) -> tuple[list[Event], str]:
    """alice starts a new chain; its key's push is lost, her message's push arrives, then
    carol's; bob polls, then syncs. His events and the conversation id."""
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    cid = room(stack, tmp_path, alice, [bob, carol], "keys")
    with messenger_for(stack, tmp_path, carol.devices[0]) as c1:
        c1.send_text(cid, "carol says hi")
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with (
        b1,
        messenger_for(stack, tmp_path, alice.devices[0]) as a1,
        messenger_for(stack, tmp_path, carol.devices[0]) as c1,
    ):
        assert texts(b1.sync()) == ["keys opens", "carol says hi"]
        alice_device = alice.devices[0].device_id
        taps[-1].drop = lambda f: f.get("action") == "mail" and f.get("from_device") == alice_device
        a1.sync()
        a1.engine(cid).request_rotation()
        rotated = a1.send_text(cid, "alice on a new chain")
        after = c1.send_text(cid, "carol after")
        assert after.seq == rotated.seq + 1
        taps[-1].wait_for(message_push(after.seq))

        events = b1.poll(5)
        events += b1.poll(0.5) + b1.sync()
    assert b1.state.conversations[cid].pending == []
    return events, cid


def test_a_message_before_its_key_is_shown_in_its_place(stack, network, tmp_path):
    """alice's message is shown first, as its seq says, not after carol's."""
    events, _ = key_arrives_late(stack, network, tmp_path)
    assert texts(events) == ["alice on a new chain", "carol after"]


def test_a_missing_key_holds_its_conversation_back_only_so_long(
    stack, network, tmp_path, monkeypatch
):
    """Past MAX_HELD messages behind it, a message without its key stops holding the
    others back (a long catch-up must not keep everything unread); it is shown when
    its key comes, late but shown."""
    monkeypatch.setattr(delivery, "MAX_HELD", 1)
    events, _ = key_arrives_late(stack, network, tmp_path)
    assert texts(events) == ["carol after", "alice on a new chain"]


def test_a_closed_socket_under_a_prekeys_low_push_does_not_end_listening(stack, network, tmp_path):
    """prekeys_low was the last thing a dying socket brought: the replenish reconnects."""
    bob = seed_person(stack, network)
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with b1:
        b1.sync()
        taps[-1].pushes.append({"action": "prekeys_low", "one_time_prekeys": 5})
        taps[-1].close()  # the network dropped just after it

        b1.poll(0.5)  # does not raise

        assert len(taps) == 2  # a new socket
        status = b1.session.request("prekey_status")
        assert status["one_time_prekeys"] >= ONE_TIME_TARGET


def test_a_session_key_behind_a_lost_push_is_waited_for_not_asked_again(stack, network, tmp_path):
    """alice's first key to bob (it opens their pairwise session) is a lost push; her key
    for a second room then comes over that session, before the sync that brings the
    first. bob keeps the second key until the sync: asking alice again at once would get
    her chain only from where she is now, and her message before it would be lost."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with b1:
        b1.sync()
        dropped: list[Frame] = []

        def first_key(frame: Frame) -> bool:
            if frame.get("action") == "mail" and not dropped:
                dropped.append(frame)
                return True
            return False

        taps[-1].drop = first_key
        first = room(stack, tmp_path, alice, [bob], "first")
        second = room(stack, tmp_path, alice, [bob], "second")
        taps[-1].wait_for(lambda f: f.get("action") == "mail" and f["conversation_id"] == second)
        assert [f["conversation_id"] for f in dropped] == [first]

        events = b1.poll(5)
        with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
            a1.sync()  # had bob asked for a key again, she would answer here
        events += b1.poll(0.5) + b1.sync()
    assert sorted(texts(events)) == ["first opens", "second opens"]
    notices = [e for e in events if isinstance(e, NoticeEvent) and e.code != "membership"]
    assert notices == []  # nothing unreadable, nothing asked for again
    assert all(not r.pending for r in b1.state.conversations.values())


def test_what_a_sync_saved_before_it_failed_is_still_handed_out(stack, network, tmp_path):
    """The batch was saved, then its ack failed: the caller still gets its messages, once
    (the next sync would not bring them again: they were saved as seen)."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    cid = room(stack, tmp_path, alice, [bob], "owed")
    b1, taps = tapped(stack, tmp_path, bob.devices[0])
    with b1:
        b1.conversations()
        taps[-1].fail_ack = 1
        with pytest.raises(FrameError):
            b1.sync()
        assert texts(b1.poll(0.2)) == ["owed opens"]
        assert texts(b1.poll(0.2) + b1.sync()) == []
    assert cid in b1.state.conversations


def test_a_session_opened_later_in_the_last_sync_page_is_not_asked_for(stack, network, tmp_path):
    """alice's first key to bob opens their pairwise session; her key for a second room
    comes over it. bob, away, syncs one page holding both, the second first (the same
    server time, the page's order): the complete sync still tries the second key after
    the first opened the session. Asked again at once, alice would send her chain only
    from where she is now, and her message before it would be lost."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    first = room(stack, tmp_path, alice, [bob], "first")
    second = room(stack, tmp_path, alice, [bob], "second")
    b1, taps = tapped(stack, tmp_path, bob.devices[0])

    def second_key_first(parts: list[Frame]) -> list[Frame]:
        mail = sorted(
            (m for part in parts for m in part["mail"]), key=lambda m: m["conversation_id"] != first
        )
        assert [m["conversation_id"] for m in mail] == [first, second]
        for m in mail:
            m["server_time"] = mail[0]["server_time"]
        parts[0]["mail"] = mail[::-1]
        for part in parts[1:]:
            part["mail"] = []
        return parts

    with b1:
        b1.conversations()  # opens the session
        taps[-1].rewrite_sync = second_key_first
        events = b1.sync()
        taps[-1].rewrite_sync = lambda parts: parts
        with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
            a1.sync()  # had bob asked for a key again, she would answer here
        events += b1.sync()
    assert sorted(texts(events)) == ["first opens", "second opens"]
    notices = [e for e in events if isinstance(e, NoticeEvent) and e.code != "membership"]
    assert notices == []
    assert all(not r.pending and not r.held_keys for r in b1.state.conversations.values())
