"""Two people with two devices each talk in a direct conversation and a room, over the
real local stack: every device gets every message once, in order; receipts come back.
"""

from __future__ import annotations

from sotto.client.events import MessageEvent, ReceiptEvent

from .conftest import Team, texts, wait_for


def test_direct_conversation_reaches_every_device_of_both_users_both_ways(team: Team) -> None:
    a1, a2 = team.alice.devices
    b1, b2 = team.bob.devices
    for device in (a1, a2, b1, b2):
        device.sync()

    # WHEN alice's first device writes to bob (by handle) and bob's second answers
    first = a1.send_text(team.bob.handle, "hello bob, from alice's phone")
    cid = first.conversation_id
    got_b1 = wait_for(b1, 1, cid)
    got_b2 = wait_for(b2, 1, cid)
    got_a2 = wait_for(a2, 1, cid)
    reply = b2.send_text(team.alice.handle, "hi alice, bob's laptop here")
    assert reply.conversation_id == cid
    assert reply.seq == first.seq + 1

    # THEN each other device got alice's message once, with sender and seq
    for events in (got_b1, got_b2, got_a2):
        [message] = [e for e in events if isinstance(e, MessageEvent)]
        assert (message.text, message.seq) == ("hello bob, from alice's phone", first.seq)
        assert (message.sender_user_id, message.sender_device_id) == (
            team.alice.user_id,
            a1.info.device_id,
        )
    # AND bob's answer reaches both of alice's devices and bob's other device
    for device in (a1, a2, b1):
        assert texts(wait_for(device, 1, cid), cid) == ["hi alice, bob's laptop here"]

    # AND alice's phone hears that bob's devices got (delivered) her message
    receipts = [e for e in a1.poll(0.5) + a1.sync() if isinstance(e, ReceiptEvent)]
    assert {r.from_user_id for r in receipts} <= {team.bob.user_id}
    stored = {m.message_id: m for m in a1.history(cid)}
    assert stored[first.message_id].receipts.get(team.bob.user_id) in ("delivered", "read")

    # AND nothing is delivered twice
    for device in (a1, a2, b1, b2):
        assert texts(device.sync(), cid) == []


def test_room_messages_reach_every_member_device_and_a_later_member_sees_only_new_ones(
    team: Team,
) -> None:
    a1, a2 = team.alice.devices
    b1, b2 = team.bob.devices
    [c1] = team.carol.devices
    cid = a1.create_room("project", [team.bob.user_id])
    for device in (a2, b1, b2, c1):
        device.sync()

    a1.send_text("#project", "room: alice one")
    b1.send_text(cid, "room: bob one")
    b2.send_text(cid, "room: bob two")
    for device, expected in (
        (a2, ["room: alice one", "room: bob one", "room: bob two"]),
        (b1, ["room: alice one", "room: bob two"]),
        (b2, ["room: alice one", "room: bob one"]),
        (a1, ["room: bob one", "room: bob two"]),
    ):
        events = wait_for(device, len(expected), cid) + device.sync()
        assert texts(events, cid) == expected

    # WHEN alice (moderator) adds carol, every sender's next message rotates to her too
    a1.add_members("#project", [team.carol.user_id])
    a1.send_text(cid, "room: welcome carol")
    b2.send_text(cid, "room: hi carol from bob")
    events = wait_for(c1, 2, cid) + c1.sync()
    assert texts(events, cid) == ["room: welcome carol", "room: hi carol from bob"]
    for device in (a2, b1):
        assert texts(wait_for(device, 2, cid) + device.sync(), cid) == [
            "room: welcome carol",
            "room: hi carol from bob",
        ]
    # carol names the room locally; the server never learns the label
    c1.label_room(cid, "proj")
    assert c1.resolve("#proj") == cid
