"""People: users named by contact, handle or id, and their identity keys.

A handle this device has not met is looked up; every identity key the server
presents is pinned on first sight and checked against the pinned one after.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sotto.frames.answers_conversations import IdentitiesPart
from sotto.frames.answers_devices import UserAnswer
from sotto.protocol.errors import IdentityChanged
from sotto.protocol.keys import IdentityPublicKey

from ..errors import FrameError, MessagingError, TrustError
from .core import Core, _identity, _operation

__all__ = ["People"]

USER_ID = re.compile(r"usr-[0-9a-f]+")  # as the server makes them (enrollment)
IDENTITIES_PER_REQUEST = 100  # docs/api.md: at most 100 users per identities frame


class People(Core):
    """Resolving and naming users; their identity keys, trusted on first use."""

    def resolve_user(self, text: str) -> str:
        """A contact (``sotto contacts``), a user id, or a handle of this network.

        A handle this device has not met is looked up (``lookup_user``); the
        identity key that comes with it is pinned on first contact, and a key
        that differs from the pinned one is refused (``TrustError``).
        """
        name = text.removeprefix("@")
        if name in self.state.contacts:
            return self.state.contacts[name]
        if USER_ID.fullmatch(name):
            return name
        handle = name.lower()
        for user_id, known in self.state.handles.items():
            if known == handle:
                return user_id
        return self.lookup_user(handle)

    @_operation
    def lookup_user(self, handle: str) -> str:
        """The user id of ``handle`` in this network, its identity pinned on first contact."""
        try:
            answer = self._ask(UserAnswer, "lookup_user", handle=handle)
        except FrameError as exc:
            if exc.code == "not_found":
                raise MessagingError(f"no user {handle!r} in this network") from None
            raise
        user_id = answer["user_id"]
        if answer["handle"] != handle or not USER_ID.fullmatch(user_id):
            raise MessagingError(f"the server's answer for {handle!r} does not match the question")
        identity = _identity(answer["identity_key"])
        try:
            self.state.tracker.check(user_id, identity)
        except IdentityChanged:
            raise TrustError(user_id, handle) from None
        self.state.handles[user_id] = handle
        self._dirty = True
        return user_id

    def name_of(self, user_id: str) -> str:
        if user_id == self.info.user_id:
            return "you"
        for handle, known in self.state.contacts.items():
            if known == user_id:
                return handle
        return self.state.handles.get(user_id, user_id)

    def _user_identities(self, user_ids: Iterable[str]) -> dict[str, IdentityPublicKey]:
        """Identity keys of users of this network, checked against those this device trusts.

        A user seen for the first time is trusted on first use (recorded,
        unverified: ``sotto verify`` compares safety numbers); a changed key
        raises ``TrustError`` and nothing is signed with it.
        """
        wanted = sorted(set(user_ids) - {self.info.user_id})
        found: dict[str, IdentityPublicKey] = {}
        for start in range(0, len(wanted), IDENTITIES_PER_REQUEST):
            answer = self._ask(
                IdentitiesPart,
                "identities",
                user_ids=wanted[start : start + IDENTITIES_PER_REQUEST],
            )
            for item in answer["identities"]:
                user_id = item["user_id"]
                identity = _identity(item["identity_key"])
                known = self.state.tracker.get(user_id)
                if known is not None and known.fingerprint != identity.fingerprint:
                    raise TrustError(user_id, self.name_of(user_id))
                found[user_id] = identity
        missing = [u for u in wanted if u not in found]
        if missing:
            raise MessagingError(f"no such user(s) in this network: {', '.join(missing)}")
        for user_id, identity in found.items():
            self.state.tracker.check(user_id, identity)  # first sight: pinned, unverified
        return found
