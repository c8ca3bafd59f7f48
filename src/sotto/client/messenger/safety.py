"""Keys and trust: safety numbers, verifying a person, this device's prekeys."""

from __future__ import annotations

from dataclasses import dataclass

from sotto.frames.answers_devices import DevicesPart
from sotto.protocol.conversation import Conversation, LocalDevice
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.safety import IdentityTracker, safety_number

from ..errors import ConnectionLost, TrustError
from ..prekeys import plan_replenish, prekey_status, publish_prekeys
from ..session import Session
from .core import _identity, _operation
from .people import People

__all__ = ["Safety", "SafetyReport"]


@dataclass(frozen=True)
class SafetyReport:
    user_id: str
    safety_number: str
    fingerprint: str
    known: bool  # this device had seen an identity for the user
    verified: bool
    changed: bool  # the server's identity differs from the one this device trusts


class Safety(People):
    """Safety numbers and ``verify``; topping up this device's one-time prekeys."""

    @_operation
    def replenish_prekeys(self) -> None:
        """Top up one-time prekeys (private halves saved before publishing).

        A socket that closed meanwhile (a ``prekeys_low`` push is often the last
        thing a dying socket brought) is reopened once, as every other call is.
        """
        try:
            self._replenish_prekeys()
        except ConnectionLost:
            self._reconnect()
            self._replenish_prekeys()

    def _replenish_prekeys(self) -> None:
        session = self.session
        if not isinstance(session, Session):
            return
        status = prekey_status(session)
        signed, one_time = plan_replenish(
            self.keys.device, status, through=self.keys.published_through, now=self._clock()
        )
        if signed is None and not one_time:
            return
        self.save()
        published = publish_prekeys(
            session, signed=signed, one_time=one_time, through=self.keys.published_through
        )
        self.keys.published_through = published.through
        self.save()

    def _presented(self, user_id: str) -> IdentityPublicKey:
        return _identity(self._ask(DevicesPart, "list_devices", user_id=user_id)["identity_key"])

    def safety(self, user_id: str) -> SafetyReport:
        return self._report(user_id, self._presented(user_id))

    def _report(self, user_id: str, presented: IdentityPublicKey) -> SafetyReport:
        known = self.state.tracker.get(user_id)
        changed = known is not None and known.fingerprint != presented.fingerprint
        number = safety_number(self.info.user_id, self.local.identity, user_id, presented)
        return SafetyReport(
            user_id=user_id,
            safety_number=number,
            fingerprint=presented.fingerprint.hex(),
            known=known is not None,
            verified=bool(known and known.verified and not changed),
            changed=changed,
        )

    @_operation
    def verify(
        self, user_id: str, *, confirm: bool = False, accept_change: bool = False
    ) -> SafetyReport:
        """Show the safety number; ``confirm`` marks it compared; ``accept_change`` takes a
        changed key (unverified) and drops the old key's devices from every conversation.
        """
        presented = self._presented(user_id)
        report = self._report(user_id, presented)
        if report.changed:
            if not accept_change:
                if confirm:
                    raise TrustError(user_id, self.name_of(user_id))
                return report
            self._forget_user(user_id)
            self.state.tracker.accept_change(user_id, presented)
        elif not (confirm or accept_change):
            return report
        else:
            self.state.tracker.check(user_id, presented)
        if confirm:
            self.state.tracker.mark_verified(user_id, presented)
        self._dirty = True
        self.save()
        return self._report(user_id, presented)

    def _forget_user(self, user_id: str) -> None:
        """Remove a user's devices from stored states (they name the identity being replaced)."""
        for cid, record in self.state.conversations.items():
            if record.state is None:
                continue
            self._live.pop(cid, None)
            scratch = LocalDevice(self.local.secrets, self.local.identity, IdentityTracker())
            old = Conversation.parse(record.state, scratch)
            kept = [m for a, m in old.members.items() if a[0] != user_id and a != scratch.address]
            old.set_members(kept, now=self._clock())
            record.state = old.serialize()
