"""Opening archived messages on the records officer's machine (sans-I/O).

``ArchiveOpener`` holds the retention devices of a network (each key
generation, rebuilt from its certificates and the key bytes KMS unwrapped)
and the chains their distributions carried. Records are fed in archive
order (distributions before the envelopes that need them, envelopes in
sequence order per conversation); each is verified as the receiving client
would verify it — sender certificate under the sender's identity, signature,
digest — at the time the server stored it, so an expired certificate or an
expired message today does not hide what was sent then.
"""

from __future__ import annotations

from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.distribution import KeyDistribution, open_key_distribution
from sotto.protocol.envelope import Envelope, ExpiryPolicy, OpenedMessage, open_envelope
from sotto.protocol.errors import UnknownChain
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.ratchet import ReceiverChain
from sotto.protocol.replay import ReplayGuard

__all__ = ["ArchiveOpener"]

# Archives hold every message; replay is judged per conversation by message id.
_REPLAY_CAPACITY = 1 << 20
# What any client accepts (docs/protocol.md §7): the opener must not be stricter.
_POLICY = ExpiryPolicy()


class ArchiveOpener:
    def __init__(self, officer: IdentityPublicKey, devices: list[DeviceSecrets]) -> None:
        self._officer = officer
        self._devices = {d.device_id: d for d in devices}
        self._chains: dict[str, dict[bytes, ReceiverChain]] = {}
        self._distribution_replay = ReplayGuard(_REPLAY_CAPACITY)
        self._replay: dict[str, ReplayGuard] = {}

    def add_distribution(
        self,
        data: bytes,
        *,
        sender_certificate: DeviceCertificate,
        sender_identity: IdentityPublicKey,
        at: int,
    ) -> bytes:
        """Verify and open a distribution to a retention device; returns its chain id."""
        kd = KeyDistribution.parse(data)
        device = self._devices.get(kd.recipient_device_id)
        if device is None:
            raise UnknownChain(f"no retention key {kd.recipient_device_id!r} in this archive")
        opened = open_key_distribution(
            data,
            device,
            self._officer,
            sender_certificate=sender_certificate,
            sender_identity=sender_identity,
            now=at,
            replay=self._distribution_replay,
        )
        chain = opened.chain
        self._chains.setdefault(kd.conversation_id, {})[chain.chain_id] = chain
        return chain.chain_id

    def open(
        self,
        data: bytes,
        *,
        sender_certificate: DeviceCertificate,
        sender_identity: IdentityPublicKey,
        at: int,
    ) -> OpenedMessage:
        """Verify and decrypt one envelope as of ``at`` (the time the server stored it)."""
        cid = Envelope.parse(data).header.conversation_id
        return open_envelope(
            data,
            conversation_id=cid,
            sender_certificate=sender_certificate,
            sender_identity=sender_identity,
            chains=self._chains.get(cid, {}),
            replay=self._replay.setdefault(cid, ReplayGuard(_REPLAY_CAPACITY)),
            now=at,
            policy=_POLICY,
        )
