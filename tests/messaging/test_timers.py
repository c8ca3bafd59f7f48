"""Expiring and burn-on-read messages: the server stops delivering them at the deadline,
and clients delete the plaintext they hold.
"""

from __future__ import annotations

import time

from .conftest import Team, texts, wait_for


def test_an_expired_message_is_not_delivered_and_is_deleted_where_it_was(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1, b2 = team.bob.devices
    cid = a1.create_room("expiry", [team.bob.user_id])
    for device in (b1, b2):
        device.sync()
    b2.disconnect()

    sent = a1.send_text(cid, "this expires in two seconds", expires_s=2)
    assert sent.delete_at is not None
    assert texts(wait_for(b1, 1, cid), cid) == ["this expires in two seconds"]
    assert [m.text for m in b1.history(cid)] == ["this expires in two seconds"]
    time.sleep(2.5)

    assert texts(b2.sync(), cid) == []  # offline past expiry: never delivered
    assert b1.history(cid) == []  # the plaintext it held is gone
    assert a1.history(cid) == []  # and the sender's copy too


def test_burn_on_read_starts_at_the_first_read_and_then_deletes_everywhere(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1, b2 = team.bob.devices
    cid = a1.create_room("burn", [team.bob.user_id])
    for device in (b1, b2):
        device.sync()
    b2.disconnect()

    a1.send_text(cid, "burn me two seconds after reading", burn_s=2)
    shown = b1.sync(read=True)  # displayed: the read ack starts the server's burn clock
    assert texts(shown, cid) == ["burn me two seconds after reading"]
    assert [m.first_read_at is not None for m in b1.history(cid)] == [True]
    time.sleep(2.5)

    assert b1.history(cid) == []
    assert texts(b2.sync(), cid) == []  # burnt on the server before bob's laptop came back
