"""Safety numbers and identity-change detection."""

from __future__ import annotations

import pytest

from sotto.protocol import errors
from sotto.protocol.safety import IdentityTracker, safety_number, safety_numbers_match

from .helpers import Party, make_party


def test_safety_number_is_order_independent_and_stable(alice: Party, bob: Party):
    ab = safety_number("alice", alice.identity_public, "bob", bob.identity_public)
    ba = safety_number("bob", bob.identity_public, "alice", alice.identity_public)
    assert ab == ba
    digits = ab.replace(" ", "")
    assert len(digits) == 60
    assert digits.isdigit()
    assert len(ab.split()) == 12


def test_safety_number_changes_when_an_identity_changes(alice: Party, bob: Party):
    other = make_party("bob", seed="bob reinstalled")
    before = safety_number("alice", alice.identity_public, "bob", bob.identity_public)
    after = safety_number("alice", alice.identity_public, "bob", other.identity_public)
    assert before != after

    def halves(number: str) -> set[str]:
        return {" ".join(number.split()[:6]), " ".join(number.split()[6:])}

    assert len(halves(before) & halves(after)) == 1  # Alice's half is unchanged


def test_safety_numbers_compare_ignoring_spacing(alice: Party, bob: Party):
    number = safety_number("alice", alice.identity_public, "bob", bob.identity_public)
    assert safety_numbers_match(number, number.replace(" ", ""))
    assert not safety_numbers_match(number, "0" * 60)


def test_tracker_records_first_key_unverified(bob: Party):
    tracker = IdentityTracker()
    known = tracker.check("bob", bob.identity_public)
    assert not known.verified


def test_tracker_never_silently_accepts_a_changed_key(bob: Party):
    tracker = IdentityTracker()
    tracker.mark_verified("bob", bob.identity_public)
    new = make_party("bob", seed="bob new phone")
    with pytest.raises(errors.IdentityChanged) as caught:
        tracker.check("bob", new.identity_public)
    assert caught.value.new_fingerprint == new.identity_public.fingerprint
    with pytest.raises(errors.IdentityChanged):  # still refused: nothing was recorded
        tracker.check("bob", new.identity_public)
    accepted = tracker.accept_change("bob", new.identity_public)
    assert not accepted.verified
    assert tracker.check("bob", new.identity_public) == accepted


def test_tracker_round_trips(alice: Party, bob: Party):
    tracker = IdentityTracker()
    tracker.check("alice", alice.identity_public)
    tracker.mark_verified("bob", bob.identity_public)
    restored = IdentityTracker.parse(tracker.serialize())
    assert restored.get("bob") == tracker.get("bob")
    assert restored.serialize() == tracker.serialize()
