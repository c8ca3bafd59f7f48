"""The conversation engine: devices wired together in memory (like h11's ConnectionPair).

``Hub`` plays the server: it hands out prekey bundles (one-time prekeys
first), keeps per-device mailboxes for key distributions and per-device
inboxes for envelopes, and delivers nothing by itself: tests decide the
order, drop or duplicate messages.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.protocol import errors
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate, Revocations
from sotto.protocol.content import Receipt, Text
from sotto.protocol.conversation import (
    MAX_CHAINS_PER_SENDER,
    Address,
    Conversation,
    ConversationSettings,
    LocalDevice,
    Member,
    MessageTimers,
    Outgoing,
    Received,
    deletion_deadline,
    must_delete,
)
from sotto.protocol.device import RESTORE_PREKEY_ID_GAP, DeviceSecrets
from sotto.protocol.envelope import Envelope, ExpiryPolicy
from sotto.protocol.keys import IdentityKeyPair
from sotto.protocol.replay import ReplayGuard
from sotto.protocol.safety import IdentityTracker
from sotto.protocol.wire import SUITE_ID

from .helpers import DAY, NOW, Party, add_device, drbg, make_party

CONV = "room-1"
RELOADS = itertools.count()


@dataclass
class Device:
    party: Party
    local: LocalDevice
    conv: Conversation
    inbox: list[bytes] = field(default_factory=list)
    mailbox: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> Address:
        return self.party.address

    @property
    def member(self) -> Member:
        return Member(self.party.certificate, self.party.identity_public)


class Hub:
    """The server's role, in memory: bundles, mailboxes, inboxes."""

    def __init__(self, parties: list[Party], *, one_time: int = 1, **options: object) -> None:
        self.devices: dict[Address, Device] = {}
        self.handed_out: set[tuple[Address, int]] = set()
        self.now = NOW
        for party in parties:
            party.device.new_one_time_prekeys(one_time, now=NOW - DAY, rng=drbg(party.user_id))
            local = LocalDevice(party.device, party.identity_public, IdentityTracker())
            conv = Conversation(CONV, local, rng=drbg("conv/" + "/".join(party.address)), **options)  # type: ignore[arg-type]
            self.devices[party.address] = Device(party, local, conv)
        members = [d.member for d in self.devices.values()]
        for device in self.devices.values():
            device.conv.set_members(members, now=NOW)

    def __getitem__(self, name: str) -> Device:
        user, _, device = name.partition("/")
        return self.devices[(user, device or "phone")]

    def bundle(self, address: Address) -> PrekeyCertificate:
        """A one-time prekey not handed out before, else the signed prekey."""
        secrets = self.devices[address].party.device
        for prekey_id in sorted(secrets.one_time_prekeys):
            if (address, prekey_id) not in self.handed_out:
                self.handed_out.add((address, prekey_id))
                return secrets.one_time_prekeys[prekey_id][1]
        return secrets.current_signed_prekey()

    def send(self, name: str, text: str = "hi", **kwargs: object) -> Outgoing:
        sender = self[name]
        needed = sender.conv.prekeys_needed(now=self.now)
        prekeys = {a: self.bundle(a) for a in needed}
        out = sender.conv.prepare_send(Text(text), now=self.now, prekeys=prekeys, **kwargs)  # type: ignore[arg-type]
        for dist in out.distributions:
            if dist.address in self.devices:
                self.devices[dist.address].mailbox.append(dist.data)
        for address in sender.conv.members:
            if address != sender.address and address in self.devices:
                self.devices[address].inbox.append(out.envelope)
        return out

    def distribute(self, name: str) -> None:
        device = self[name]
        for data in device.mailbox:
            device.conv.receive_distribution(data, now=self.now)
        device.mailbox.clear()

    def deliver(self, name: str) -> list[str]:
        """Distributions first, then envelopes; returns texts or error codes."""
        self.distribute(name)
        device = self[name]
        results: list[str] = []
        for data in device.inbox:
            results.append(receive_text(device.conv, data, now=self.now))
        device.inbox.clear()
        return results


def receive_text(conv: Conversation, data: bytes, *, now: int) -> str:
    try:
        received = conv.receive_envelope(data, now=now)
    except errors.ProtocolError as exc:
        return exc.code
    assert isinstance(received.content, Text)
    return received.content.text


@pytest.fixture
def pair(alice: Party, bob: Party) -> Hub:
    return Hub([alice, bob])


@pytest.fixture
def trio(alice: Party, bob: Party, carol: Party) -> Hub:
    return Hub([alice, bob, carol])


# --- two and three devices --------------------------------------------------------------


def test_two_devices_talk_and_only_the_first_send_distributes(pair: Hub):
    first = pair.send("alice", "hello bob")
    assert [d.address for d in first.distributions] == [("bob", "phone")]
    assert first.rotation_reason == "no sender chain yet"
    second = pair.send("alice", "again")
    assert second.distributions == ()
    assert second.rotation_reason is None
    assert pair.deliver("bob") == ["hello bob", "again"]
    pair.send("bob", "hi alice")
    assert pair.deliver("alice") == ["hi alice"]


def test_one_time_prekey_is_consumed_and_the_distribution_cannot_be_replayed(pair: Hub):
    bob = pair["bob"]
    (one_time_id,) = bob.party.device.one_time_prekeys
    out = pair.send("alice", "x")
    distribution = out.distributions[0].data
    pair.deliver("bob")
    assert one_time_id not in bob.party.device.one_time_prekeys
    with pytest.raises(errors.ReplayedMessage):
        bob.conv.receive_distribution(distribution, now=NOW)
    # After a restart that lost the replay set, the prekey is still gone.
    fresh = Conversation(CONV, bob.local)
    fresh.set_members(bob.conv.members.values(), now=NOW)
    with pytest.raises(errors.PrekeyError):
        fresh.receive_distribution(distribution, now=NOW)


def test_three_devices_out_of_order_and_duplicates(trio: Hub):
    sent = [trio.send("alice", f"m{i}").envelope for i in range(5)]
    for name in ("bob", "carol"):
        trio.deliver(name)  # in order: m0..m4
    more = [trio.send("alice", f"n{i}").envelope for i in range(5)]
    carol = trio["carol"].conv
    assert [receive_text(carol, e, now=NOW) for e in reversed(more)] == [
        "n4", "n3", "n2", "n1", "n0"
    ]  # fmt: skip
    assert receive_text(carol, more[2], now=NOW) == "replayed_message"
    assert receive_text(carol, sent[0], now=NOW) == "replayed_message"
    trio.send("carol", "from carol")
    assert trio.deliver("alice") == ["from carol"]
    assert trio.deliver("bob")[-1] == "from carol"


def test_own_devices_read_each_others_messages(alice: Party, bob: Party):
    laptop = add_device(alice, "laptop")
    hub = Hub([alice, laptop, bob])
    out = hub.send("alice", "from my phone")
    assert {d.address for d in out.distributions} == {("alice", "laptop"), ("bob", "phone")}
    assert hub.deliver("alice/laptop") == ["from my phone"]
    # The sending device's own copy comes back through sync: named, not decrypted.
    assert receive_text(hub["alice"].conv, out.envelope, now=NOW) == "replayed_message"


def test_envelope_size_does_not_depend_on_room_size(alice: Party, bob: Party):
    small = Hub([alice, bob])
    big = Hub([make_party("alice"), *(make_party(f"u{i}") for i in range(6))])
    a = small.send("alice", "same text")
    b = big.send("alice", "same text")
    assert len(a.envelope) == len(b.envelope)
    assert len(b.distributions) == 6
    assert big.send("alice", "next").distributions == ()


# --- lost distributions, rotation, membership ---------------------------------------------


def test_lost_distribution_is_a_named_error_and_redistribution_repairs(trio: Hub):
    trio.send("alice", "before")
    trio["carol"].mailbox.clear()  # carol's distribution is lost
    assert trio.deliver("carol") == ["unknown_chain"]
    early = trio.send("alice", "still lost").envelope
    repair = trio["alice"].conv.redistribute(
        ("carol", "phone"), trio.bundle(("carol", "phone")), now=NOW
    )
    trio["carol"].conv.receive_distribution(repair.data, now=NOW)
    # The repaired chain starts at the current iteration: earlier keys are gone at the sender.
    assert receive_text(trio["carol"].conv, early, now=NOW) == "message_key_unavailable"
    trio["carol"].inbox.clear()
    trio.send("alice", "after repair")
    assert trio.deliver("carol") == ["after repair"]
    assert trio.deliver("bob") == ["before", "still lost", "after repair"]


def test_envelope_before_its_distribution_can_be_retried(pair: Hub):
    out = pair.send("alice", "early")
    bob = pair["bob"].conv
    assert receive_text(bob, out.envelope, now=NOW) == "unknown_chain"  # state unchanged
    pair.deliver("bob")  # distribution, then the queued envelope
    assert receive_text(bob, out.envelope, now=NOW) == "replayed_message"


def test_removed_member_cannot_read_after_rotation(trio: Hub):
    trio.send("alice", "everyone")
    assert trio.deliver("carol") == ["everyone"]
    change = trio["alice"].conv.set_members([trio["alice"].member, trio["bob"].member], now=NOW)
    assert change.removed == (("carol", "phone"),)
    assert change.changed
    assert trio["alice"].conv.prekeys_needed(now=NOW) == [("bob", "phone")]
    out = trio.send("alice", "without carol")
    assert out.rotation_reason == "membership or devices changed"
    assert [d.address for d in out.distributions] == [("bob", "phone")]
    trio["carol"].inbox.append(out.envelope)  # carol (or the server) still gets the bytes
    assert trio.deliver("carol") == ["unknown_chain"]
    assert trio.deliver("bob") == ["everyone", "without carol"]


def test_messages_from_a_removed_member_are_refused(trio: Hub):
    trio["bob"].conv.set_members([trio["alice"].member, trio["bob"].member], now=NOW)
    out = trio.send("carol", "let me in")
    assert receive_text(trio["bob"].conv, out.envelope, now=NOW) == "unknown_sender"
    with pytest.raises(errors.UnknownSender):
        trio["bob"].conv.receive_distribution(trio["bob"].mailbox[0], now=NOW)


def test_added_device_gets_the_next_chain(alice: Party, bob: Party):
    hub = Hub([alice, bob])
    hub.send("alice", "one")
    tablet = add_device(bob, "tablet")
    tablet.device.new_one_time_prekeys(1, now=NOW - DAY, rng=drbg("tablet"))
    local = LocalDevice(tablet.device, tablet.identity_public, IdentityTracker())
    members = [
        hub["alice"].member,
        hub["bob"].member,
        Member(tablet.certificate, bob.identity.public),
    ]
    hub.devices[tablet.address] = Device(
        tablet, local, Conversation.create(CONV, local, members, now=NOW)
    )
    assert hub["alice"].conv.set_members(members, now=NOW).added == (("bob", "tablet"),)
    hub.send("alice", "two")
    assert hub.deliver("bob/tablet") == ["two"]
    assert hub.deliver("bob") == ["one", "two"]


def test_replaced_device_certificate_forces_rotation(pair: Hub):
    pair.send("alice", "one")
    pair.deliver("bob")
    bob = pair["bob"].party
    # Same (user, device) pair, new device key: the digest is unchanged, the chain must not be.
    new_secrets = DeviceSecrets.create(bob.identity, "bob", "phone", now=NOW - DAY, rng=drbg("b2"))
    change = pair["alice"].conv.set_members(
        [pair["alice"].member, Member(new_secrets.certificate, bob.identity.public)], now=NOW
    )
    assert change.replaced == (("bob", "phone"),)
    assert pair["alice"].conv.rotation_reason(now=NOW) is not None
    assert pair["alice"].conv.receiver_chain_ids(("bob", "phone")) == ()


def test_rotation_after_n_messages_and_after_t(alice: Party, bob: Party):
    hub = Hub([alice, bob], settings=ConversationSettings(max_messages=2, max_age_ms=60_000))
    reasons = [hub.send("alice", f"m{i}").rotation_reason for i in range(5)]
    assert reasons == [
        "no sender chain yet", None, "2 messages sent on this chain", None,
        "2 messages sent on this chain",
    ]  # fmt: skip
    hub.now += 60_000
    assert hub.send("alice", "late").rotation_reason == "chain is older than its maximum age"
    assert hub.deliver("bob") == ["m0", "m1", "m2", "m3", "m4", "late"]
    assert len(hub["bob"].conv.receiver_chain_ids(("alice", "phone"))) == 4


def test_offline_catch_up_across_many_rotations_needs_server_order(alice: Party, bob: Party):
    """More rotations than retained chains: merged order reads everything, mailbox-first cannot."""
    hub = Hub([alice, bob], one_time=0, settings=ConversationSettings(max_messages=1))
    stream: list[tuple[str, bytes]] = []  # the server's order across mailbox and conversation
    for i in range(MAX_CHAINS_PER_SENDER + 2):
        out = hub.send("alice", f"m{i}")
        stream += [("d", d.data) for d in out.distributions] + [("e", out.envelope)]
    merged = Conversation.parse(hub["bob"].conv.serialize(), hub["bob"].local)
    texts = [
        receive_text(merged, data, now=NOW)
        if kind == "e"
        else merged.receive_distribution(data, now=NOW) and ""
        for kind, data in stream
    ]
    assert [t for t in texts if t] == [f"m{i}" for i in range(MAX_CHAINS_PER_SENDER + 2)]
    mailbox_first = hub.deliver("bob")
    assert mailbox_first[:2] == ["unknown_chain", "unknown_chain"]
    assert mailbox_first[2:] == [f"m{i}" for i in range(2, MAX_CHAINS_PER_SENDER + 2)]


def test_prekeys_required_names_the_devices_and_changes_nothing(trio: Hub):
    conv = trio["alice"].conv
    before = conv.serialize()
    with pytest.raises(errors.PrekeysRequired) as caught:
        conv.prepare_send(
            Text("x"), now=NOW, prekeys={("bob", "phone"): trio.bundle(("bob", "phone"))}
        )
    assert caught.value.devices == [("carol", "phone")]
    assert caught.value.fault == "local"
    assert conv.serialize() == before


def test_failed_send_is_atomic(pair: Hub):
    pair.send("alice", "one")
    conv = pair["alice"].conv
    before = conv.serialize()
    with pytest.raises(errors.LimitExceeded):
        conv.prepare_send(Text("x"), now=NOW, timers=MessageTimers(expires_in_ms=10**13))
    assert conv.serialize() == before
    conv.request_rotation()
    wrong = pair["alice"].party.device.current_signed_prekey()  # alice's prekey, not bob's
    with pytest.raises(errors.BadCertificate):
        conv.prepare_send(Text("x"), now=NOW, prekeys={("bob", "phone"): wrong})
    assert conv.rotation_reason(now=NOW) is not None
    conv.request_rotation()
    assert conv.sender_chain_id is not None


def test_changed_identity_is_never_accepted_silently(pair: Hub):
    alice = pair["alice"]
    impostor = IdentityKeyPair.generate(drbg("impostor"))
    fake = DeviceSecrets.create(impostor, "bob", "phone", now=NOW - DAY, rng=drbg("fake"))
    before = alice.conv.serialize()
    with pytest.raises(errors.IdentityChanged):
        alice.conv.set_members([alice.member, Member(fake.certificate, impostor.public)], now=NOW)
    assert alice.conv.serialize() == before
    alice.local.tracker.accept_change("bob", impostor.public)
    assert alice.conv.set_members(
        [alice.member, Member(fake.certificate, impostor.public)], now=NOW
    ).replaced == (("bob", "phone"),)


def test_revoked_member_device_is_refused(alice: Party, bob: Party):
    revocations = Revocations()
    revocations.revoke("bob", "phone")
    local = LocalDevice(alice.device, alice.identity_public, IdentityTracker(), revocations)
    with pytest.raises(errors.DeviceRevoked):
        Conversation.create(CONV, local, [Member(bob.certificate, bob.identity_public)], now=NOW)


def test_wrong_conversation_and_recipient(trio: Hub):
    out = trio.send("alice", "x")
    other = Conversation(CONV + "-2", trio["bob"].local)
    other.set_members(trio["bob"].conv.members.values(), now=NOW)
    with pytest.raises(errors.WrongConversation):
        other.receive_envelope(out.envelope, now=NOW)
    with pytest.raises(errors.WrongConversation):
        other.receive_distribution(trio["bob"].mailbox[0], now=NOW)
    with pytest.raises(errors.WrongRecipient):
        trio["bob"].conv.receive_distribution(trio["carol"].mailbox[0], now=NOW)


# --- expiry and burn-on-read ----------------------------------------------------------------


def test_expiring_message_and_burn_on_read_deadlines(pair: Hub):
    out = pair.send(
        "alice", "secret", timers=MessageTimers(expires_in_ms=60_000, burn_after_read_s=10)
    )
    assert out.delete_at == NOW + 60_000
    pair.distribute("bob")
    received = pair["bob"].conv.receive_envelope(out.envelope, now=NOW + 1000)
    assert isinstance(received, Received)
    assert received.delete_at(None) == NOW + 60_000
    assert received.delete_at(NOW + 2000) == NOW + 12_000  # burn from first read
    assert received.delete_at(NOW + 55_000) == NOW + 60_000  # never beyond expiry
    assert not received.must_delete(now=NOW + 11_999, first_read_at=NOW + 2000)
    assert received.must_delete(now=NOW + 12_000, first_read_at=NOW + 2000)
    assert deletion_deadline(received.header, first_read_at=None) == NOW + 60_000
    assert not must_delete(received.header, now=NOW, first_read_at=None)


def test_message_arriving_expired_has_its_key_deleted(pair: Hub):
    pair.send("alice", "first")
    out = pair.send("alice", "short", timers=MessageTimers(expires_in_ms=1000))
    late = pair.send("alice", "later")
    bob = pair["bob"].conv
    pair.distribute("bob")
    state = bob.serialize()
    assert receive_text(bob, out.envelope, now=NOW + 1000) == "message_expired"
    assert bob.serialize() != state  # the skipped key for "short" is gone
    assert receive_text(bob, out.envelope, now=NOW) == "replayed_message"
    assert receive_text(bob, late.envelope, now=NOW + 1000) == "later"
    assert receive_text(bob, pair["bob"].inbox[0], now=NOW + 1000) == "first"


def test_timers_are_capped_by_the_network_policy(alice: Party, bob: Party):
    policy = ExpiryPolicy(max_expiry_ms=DAY, max_burn_after_read_s=60)
    with pytest.raises(errors.LimitExceeded):
        ConversationSettings(policy=policy, timers=MessageTimers(expires_in_ms=2 * DAY))
    hub = Hub([alice, bob], settings=ConversationSettings(policy, MessageTimers(DAY, 60)))
    out = hub.send("alice", "default timers")
    assert (out.header.expires_at, out.header.burn_after_read_s) == (NOW + DAY, 60)
    with pytest.raises(errors.LimitExceeded):
        hub.send("alice", "x", timers=MessageTimers(burn_after_read_s=61))


# --- persistence ----------------------------------------------------------------------------


def reload(device: Device) -> None:
    """What the client does across a restart: persist, then parse everything back."""
    secrets = DeviceSecrets.parse(device.party.device.serialize())
    tracker = IdentityTracker.parse(device.local.tracker.serialize())
    identity = device.party.identity_public
    device.party = replace(device.party, device=secrets)
    device.local = LocalDevice(secrets, identity, tracker, device.local.revocations)
    data = device.conv.serialize()
    # A fresh stream per restart: an injected rng must never repeat (ids, chain keys).
    seed = f"reloaded/{'/'.join(device.address)}/{next(RELOADS)}"
    device.conv = Conversation.parse(data, device.local, rng=drbg(seed))
    assert device.conv.serialize() == data


def test_persistence_mid_conversation(trio: Hub):
    trio.send("alice", "a1")
    trio.send("bob", "b1")
    assert trio.deliver("carol") == ["a1", "b1"]
    skipped = [trio.send("alice", f"a{i}").envelope for i in range(2, 5)]
    carol = trio["carol"]
    carol.inbox.clear()
    assert receive_text(carol.conv, skipped[2], now=NOW) == "a4"  # a2, a3 skipped
    for name in ("alice", "bob", "carol"):
        reload(trio[name])
    assert receive_text(carol.conv, skipped[0], now=NOW) == "a2"
    assert receive_text(carol.conv, skipped[2], now=NOW) == "replayed_message"
    trio.send("alice", "a5")
    trio.send("carol", "c1")
    assert trio.deliver("carol") == ["a5"]
    assert trio.deliver("bob") == ["a1", "a2", "a3", "a4", "a5", "c1"]
    assert receive_text(carol.conv, skipped[1], now=NOW) == "a3"


def test_state_holds_no_key_of_a_used_message(pair: Hub):
    outs = [pair.send("alice", f"m{i}") for i in range(3)]
    pair.distribute("bob")
    chain_id = outs[0].header.chain_id
    early = Conversation.parse(pair["bob"].conv.serialize(), pair["bob"].local)
    used = [early._chains[chain_id].peek(i) for i in range(3)]
    salts = [out.header.salt for out in outs]
    assert pair.deliver("bob") == ["m0", "m1", "m2"]
    for state in (pair["bob"].conv.serialize(), pair["alice"].conv.serialize()):
        for step, salt in zip(used, salts, strict=True):
            assert step.seed not in state
            assert step.keys(salt).key not in state
        assert early._chains[chain_id].chain_key not in state


def test_parse_rejects_bad_states(pair: Hub):
    pair.send("alice", "x")
    pair.deliver("bob")
    bob = pair["bob"]
    data = bob.conv.serialize()
    with pytest.raises(errors.MalformedMessage):
        Conversation.parse(data + b"\x00", bob.local)
    with pytest.raises(errors.MalformedMessage):
        Conversation.parse(data[:-1], bob.local)
    with pytest.raises(errors.SuiteDowngrade):
        Conversation.parse(data[:1] + (SUITE_ID + 1).to_bytes(2, "big") + data[3:], bob.local)
    with pytest.raises(errors.MalformedMessage, match="another device"):
        Conversation.parse(data, pair["alice"].local)
    # An identity the tracker knows differently is never loaded silently.
    tracker = IdentityTracker()
    tracker.check("alice", IdentityKeyPair.generate(drbg("other")).public)
    other = LocalDevice(bob.local.secrets, bob.local.identity, tracker)
    with pytest.raises(errors.IdentityChanged):
        Conversation.parse(data, other)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "da", "db", "ra", "rb"]), min_size=1, max_size=14))
def test_any_interleaving_with_restarts_delivers_everything_once(steps: list[str]):
    alice, bob = make_party("alice"), make_party("bob")
    hub = Hub([alice, bob], one_time=2, settings=ConversationSettings(max_messages=3))
    sent: dict[str, list[str]] = {"alice": [], "bob": []}
    got: dict[str, list[str]] = {"alice": [], "bob": []}
    names = {"a": "alice", "b": "bob"}
    for i, step in enumerate(steps):
        name = names[step[-1]]
        peer = "bob" if name == "alice" else "alice"
        if len(step) == 1:
            hub.send(name, f"{name}{i}")
            sent[name].append(f"{name}{i}")
        elif step[0] == "d":
            got[name] += hub.deliver(name)
        else:
            reload(hub[name])
        assert got[name] == sent[peer][: len(got[name])]
    got["alice"] += hub.deliver("alice")
    got["bob"] += hub.deliver("bob")
    assert got == {"alice": sent["bob"], "bob": sent["alice"]}


def test_receipts_travel_as_ordinary_content(pair: Hub):
    out = pair.send("alice", "read me")
    pair.deliver("bob")
    bob = pair["bob"].conv
    receipt = bob.prepare_send(
        Receipt(Receipt.READ, (out.message_id,)),
        now=NOW,
        prekeys={a: pair.bundle(a) for a in bob.prekeys_needed(now=NOW)},
    )
    for dist in receipt.distributions:
        pair["alice"].conv.receive_distribution(dist.data, now=NOW)
    opened = pair["alice"].conv.receive_envelope(receipt.envelope, now=NOW)
    assert opened.content == Receipt(Receipt.READ, (out.message_id,))
    assert Envelope.parse(receipt.envelope).header.sender_user_id == "bob"


def test_certificate_in_members_must_match_identity(alice: Party, bob: Party):
    local = LocalDevice(alice.device, alice.identity_public, IdentityTracker())
    with pytest.raises(errors.BadCertificate):
        Conversation.create(CONV, local, [Member(bob.certificate, alice.identity_public)], now=NOW)
    with pytest.raises(errors.MalformedMessage):
        LocalDevice(alice.device, bob.identity_public, IdentityTracker())
    cert: DeviceCertificate = bob.certificate
    assert Member(cert, bob.identity_public).address == ("bob", "phone")


def test_old_chain_is_never_reinstalled_even_after_the_replay_set_forgets(alice: Party, bob: Party):
    hub = Hub([alice, bob], one_time=0, settings=ConversationSettings(max_messages=1))
    first = hub.send("alice", "m0").distributions[0].data
    assert hub.deliver("bob") == ["m0"]
    for i in range(1, 10):
        hub.now += 1000
        hub.send("alice", f"m{i}")
        assert hub.deliver("bob") == [f"m{i}"]
    conv = hub["bob"].conv
    assert len(conv.receiver_chain_ids(("alice", "phone"))) == MAX_CHAINS_PER_SENDER
    with pytest.raises(errors.ReplayedMessage, match="already accepted"):
        conv.receive_distribution(first, now=hub.now)
    # Simulate both memories having evicted it: the watermark still refuses the old chain.
    conv._retired.clear()
    conv._replay = ReplayGuard(16)
    before = conv.serialize()
    with pytest.raises(errors.ReplayedMessage, match="older than"):
        conv.receive_distribution(first, now=hub.now)
    assert conv.serialize() == before
    reloaded = Conversation.parse(conv.serialize(), hub["bob"].local)
    with pytest.raises(errors.ReplayedMessage, match="older than"):
        reloaded.receive_distribution(first, now=hub.now)


# --- rollback (docs/protocol.md §14.6) --------------------------------------------------


def test_rolled_back_sender_never_repeats_a_key_and_nonce(pair: Hub):
    """A restored backup continues the old chain position; the salt still changes the keys."""
    alice = pair["alice"]
    pair.send("alice", "before the backup")
    backup = alice.conv.serialize()
    original = pair.send("alice", "after the backup")
    alice.conv = Conversation.parse(backup, alice.local, rng=drbg("after restore"))
    replayed = pair.send("alice", "sent from the restored state")
    assert (replayed.header.chain_id, replayed.header.iteration) == (
        original.header.chain_id,
        original.header.iteration,
    )
    assert replayed.header.salt != original.header.salt
    assert replayed.header.key_commitment != original.header.key_commitment
    # Bob already used that position: the message from the rolled-back state is refused.
    assert pair.deliver("bob") == [
        "before the backup", "after the backup", "message_key_unavailable"
    ]  # fmt: skip


def test_restored_conversation_starts_a_new_chain_before_sending(pair: Hub):
    alice = pair["alice"]
    first = pair.send("alice", "one")
    backup = alice.conv.serialize()
    pair.send("alice", "two")
    alice.conv = Conversation.parse(backup, alice.local, rng=drbg("after restore"))
    alice.conv.restored()
    assert alice.conv.sender_position is None
    assert alice.conv.rotation_reason(now=NOW) == "no sender chain yet"
    out = pair.send("alice", "three")
    assert out.header.chain_id != first.header.chain_id
    assert [d.address for d in out.distributions] == [("bob", "phone")]
    assert pair.deliver("bob") == ["one", "two", "three"]
    assert alice.conv.sender_position == (out.header.chain_id, 1)


def test_restored_device_forgets_one_time_prekeys_and_skips_published_ids(alice: Party):
    device = alice.device
    kept, used = device.new_one_time_prekeys(2, now=NOW, rng=drbg("o"))
    before = device.next_prekey_id
    signed = device.restored(now=NOW, keep_one_time=[kept.prekey_id], rng=drbg("r"))
    assert set(device.one_time_prekeys) == {kept.prekey_id}  # `used` no longer opens anything
    assert signed.prekey_id >= before + RESTORE_PREKEY_ID_GAP
    assert device.current_signed_prekey() == signed
    assert used.prekey_id not in device.one_time_prekeys
