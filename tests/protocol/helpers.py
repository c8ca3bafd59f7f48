"""Deterministic randomness and a small cast of users/devices for protocol tests."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair, IdentityPublicKey, Random
from sotto.protocol.replay import ReplayGuard

NOW = 1_760_000_000_000  # fixed clock, ms
DAY = 24 * 3600 * 1000


def drbg(seed: bytes | str) -> Random:
    """A reproducible byte stream: SHAKE-256(seed || counter) per call."""
    base = seed.encode() if isinstance(seed, str) else seed
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return hashlib.shake_256(base + next(counter).to_bytes(8, "big")).digest(n)

    return rng


@dataclass
class Party:
    user_id: str
    identity: IdentityKeyPair
    device: DeviceSecrets
    replay: ReplayGuard = field(default_factory=ReplayGuard)

    @property
    def identity_public(self) -> IdentityPublicKey:
        return self.identity.public

    @property
    def certificate(self) -> DeviceCertificate:
        return self.device.certificate

    @property
    def address(self) -> tuple[str, str]:
        return (self.user_id, self.device.device_id)

    def prekey(self) -> PrekeyCertificate:
        return self.device.current_signed_prekey()


def make_party(user_id: str, device_id: str = "phone", *, seed: str | None = None) -> Party:
    rng = drbg(seed or f"{user_id}/{device_id}")
    identity = IdentityKeyPair.generate(rng)
    device = DeviceSecrets.create(identity, user_id, device_id, now=NOW - DAY, rng=rng)
    return Party(user_id, identity, device)


def add_device(party: Party, device_id: str) -> Party:
    rng = drbg(f"{party.user_id}/{device_id}")
    device = DeviceSecrets.create(party.identity, party.user_id, device_id, now=NOW - DAY, rng=rng)
    return Party(party.user_id, party.identity, device)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)
