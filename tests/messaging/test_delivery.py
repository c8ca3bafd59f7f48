"""Nothing lost, nothing twice: offline catch-up, reconnects in a burst, duplicate sends,
a recipient's socket killed while messages fan out.
"""

from __future__ import annotations

import socket
import time

from sotto.client.encoding import b64e
from sotto.client.events import MessageEvent
from sotto.client.messenger import Messenger
from sotto.protocol.content import Text

from .conftest import Team, texts, wait_for


def _kill_socket(messenger: Messenger) -> None:
    """Drop the TCP connection under the session, as a network failure would."""
    connection = messenger.session._connection  # type: ignore[attr-defined]
    connection.socket.shutdown(socket.SHUT_RDWR)


def _room(team: Team, label: str) -> str:
    a1 = team.alice.devices[0]
    cid = a1.create_room(label, [team.bob.user_id])
    for device in (*team.alice.devices, *team.bob.devices):
        device.sync()
    return cid


def test_offline_device_catches_up_in_order_exactly_once(team: Team) -> None:
    a1 = team.alice.devices[0]
    b2 = team.bob.devices[1]
    cid = _room(team, "catchup")
    b2.disconnect()

    sent = [a1.send_text(cid, f"catch-up {i}") for i in range(12)]

    events = b2.sync()
    assert texts(events, cid) == [f"catch-up {i}" for i in range(12)]
    seqs = [e.seq for e in events if isinstance(e, MessageEvent) and e.conversation_id == cid]
    assert seqs == [s.seq for s in sent]
    assert texts(b2.sync(), cid) == []
    assert texts(b2.poll(0.5), cid) == []


def test_reconnect_in_the_middle_of_a_burst_loses_and_repeats_nothing(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = _room(team, "burst")

    for i in range(5):
        a1.send_text(cid, f"burst {i}")
    first = wait_for(b1, 2, cid)
    _kill_socket(b1)
    for i in range(5, 10):
        a1.send_text(cid, f"burst {i}")
    rest = wait_for(b1, 10 - len(texts(first, cid)), cid)

    assert texts(first + rest, cid) == [f"burst {i}" for i in range(10)]
    assert texts(b1.sync(), cid) == []


def test_the_same_envelope_sent_twice_is_stored_once_with_the_same_answer(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1, b2 = team.bob.devices
    cid = _room(team, "dupes")
    a1.send_text(cid, "before the duplicate")  # the chain is distributed by now
    for device in (b1, b2):
        device.sync()

    outgoing = a1.engine(cid).prepare_send(Text("only once"), now=int(time.time() * 1000))
    a1.save()
    envelope = b64e(outgoing.envelope)
    first = a1.session.request("send", conversation_id=cid, envelope=envelope)
    again = a1.session.request("send", conversation_id=cid, envelope=envelope)

    assert {k: first[k] for k in ("seq", "message_id", "server_time")} == {
        k: again[k] for k in ("seq", "message_id", "server_time")
    }
    for device in (b1, b2):
        events = wait_for(device, 1, cid, timeout=3) + device.sync()
        assert texts(events, cid) == ["only once"]
    assert texts(a1.sync(), cid) == []
    nxt = a1.send_text(cid, "after the duplicate")
    assert nxt.seq == first["seq"] + 1


def test_a_socket_killed_during_fan_out_loses_nothing(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1, b2 = team.bob.devices
    cid = _room(team, "fanout")
    assert b1.session is not None  # connected, so pushes to it are attempted (and fail)
    _kill_socket(b1)

    for i in range(8):
        a1.send_text(cid, f"fan-out {i}")
        if i == 3:
            _kill_socket(b2)

    for device in (b1, b2):
        events = device.poll(0.5) + device.sync()
        assert texts(events, cid) == [f"fan-out {i}" for i in range(8)]
        assert texts(device.sync(), cid) == []
