"""Prekey bookkeeping: unpublished prekeys are reused, the signed prekey rotates when it must,
and a batch an earlier run already published is not an error."""

from __future__ import annotations

from typing import Any, cast

from sotto.client.prekeys import (
    PrekeyStatus,
    now_ms,
    plan_replenish,
    publish_prekeys,
    unpublished_one_time,
)
from sotto.client.session import Session
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair

from .test_session import FakeConnection


def device() -> DeviceSecrets:
    return DeviceSecrets.create(IdentityKeyPair.generate(), "usr-1", "dev-1", now=now_ms())


def test_replenish_publishes_prekeys_made_earlier_before_making_new_ones() -> None:
    d = device()
    earlier = d.new_one_time_prekeys(5, now=now_ms())
    signed, one_time = plan_replenish(
        d, PrekeyStatus(97, now_ms() + 10_000), through=0, now=now_ms()
    )
    assert signed is None
    assert one_time == earlier[:3]
    assert len(d.one_time_prekeys) == 5


def test_replenish_tops_up_to_the_target_and_no_further() -> None:
    d = device()
    _, one_time = plan_replenish(d, PrekeyStatus(60, now_ms() + 10_000), through=0, now=now_ms())
    assert len(one_time) == 40
    _, none = plan_replenish(
        d, PrekeyStatus(100, now_ms() + 10_000), through=one_time[-1].prekey_id, now=now_ms()
    )
    assert none == []


def test_replenish_rotates_the_signed_prekey_when_the_server_has_none() -> None:
    d = device()
    before = d.current_signed_prekey()
    signed, _ = plan_replenish(d, PrekeyStatus(100, None), through=0, now=now_ms())
    assert signed is not None
    assert signed.prekey_id > before.prekey_id
    assert d.current_signed_prekey() == signed


def test_published_watermark_hides_published_prekeys() -> None:
    d = device()
    made = d.new_one_time_prekeys(4, now=now_ms())
    assert unpublished_one_time(d, made[1].prekey_id) == made[2:]


def test_publish_sends_batches_of_40_and_skips_a_batch_already_published() -> None:
    d = device()
    made = d.new_one_time_prekeys(90, now=now_ms())
    fake = FakeConnection(
        [{"action": "error", "id": "$id", "code": "conflict", "message": "prekey id reused"}],
        [{"action": "prekeys_published", "id": "$id", "one_time_prekeys": 80}],
        [{"action": "prekeys_published", "id": "$id", "one_time_prekeys": 90}],
    )
    result = publish_prekeys(
        Session(cast(Any, fake)), signed=d.current_signed_prekey(), one_time=made
    )
    assert [len(f.get("one_time_prekeys", [])) for f in fake.sent] == [40, 40, 10]
    assert "signed_prekey" in fake.sent[0]
    assert "signed_prekey" not in fake.sent[1]
    assert result.stored == 90
    assert result.through == made[-1].prekey_id
