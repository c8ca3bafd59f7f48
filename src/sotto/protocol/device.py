"""A device's own secrets: its signing key, certificate and HPKE prekeys.

Forward secrecy of a key distribution ends when the private key it was sealed
to is deleted, so prekey private keys live as briefly as delivery allows:

* one-time prekeys (senders use one whenever the directory has one) are
  deleted the moment one has opened a distribution;
* the signed prekey, the fallback, is rotated every
  ``SIGNED_PREKEY_ROTATION_MS`` (2 days), senders may seal to it for
  ``SIGNED_PREKEY_VALIDITY_MS`` (7 days), and its private key is deleted
  ``SIGNED_PREKEY_GRACE_MS`` (2 days) after that, for distributions still in
  a mailbox: at most 9 days after it was made (``prune``).

A distribution that arrives after its prekey was deleted is
``prekey_unavailable``; the recipient asks the sender for a new one
(docs/protocol.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .certificates import DeviceCertificate, PrekeyCertificate, PrekeyKind
from .errors import LimitExceeded, MalformedMessage, PrekeyError
from .keys import IdentityKeyPair, KemKeyPair, Random, SigningKey, system_random
from .wire import MessageType, Reader, Writer, check_identifier, parse_prefix

__all__ = [
    "DEVICE_CERT_VALIDITY_MS",
    "MAX_ONE_TIME_PREKEYS",
    "ONE_TIME_PREKEY_VALIDITY_MS",
    "RESTORE_PREKEY_ID_GAP",
    "SIGNED_PREKEY_GRACE_MS",
    "SIGNED_PREKEY_ROTATION_MS",
    "SIGNED_PREKEY_VALIDITY_MS",
    "DeviceSecrets",
]

DAY_MS = 24 * 3600 * 1000
DEVICE_CERT_VALIDITY_MS = 365 * DAY_MS
SIGNED_PREKEY_ROTATION_MS = 2 * DAY_MS
SIGNED_PREKEY_VALIDITY_MS = 7 * DAY_MS
SIGNED_PREKEY_GRACE_MS = 2 * DAY_MS
ONE_TIME_PREKEY_VALIDITY_MS = 30 * DAY_MS  # unused: nothing was sealed to it yet
MAX_ONE_TIME_PREKEYS = 1000
RESTORE_PREKEY_ID_GAP = 1 << 20  # past every id a rolled-back device may have published


@dataclass
class DeviceSecrets:
    user_id: str
    device_id: str
    signing_key: SigningKey
    certificate: DeviceCertificate
    signed_prekeys: dict[int, tuple[KemKeyPair, PrekeyCertificate]] = field(default_factory=dict)
    one_time_prekeys: dict[int, tuple[KemKeyPair, PrekeyCertificate]] = field(default_factory=dict)
    next_prekey_id: int = 1

    @classmethod
    def create(
        cls,
        identity: IdentityKeyPair,
        user_id: str,
        device_id: str,
        *,
        now: int,
        rng: Random = system_random,
        validity_ms: int = DEVICE_CERT_VALIDITY_MS,
    ) -> DeviceSecrets:
        """A new device certified by ``identity``, with its first signed prekey."""
        signing_key = SigningKey.generate(rng)
        cert = DeviceCertificate.issue(
            identity,
            user_id,
            device_id,
            signing_key.public,
            issued_at=now,
            expires_at=now + validity_ms,
        )
        device = cls(user_id, device_id, signing_key, cert)
        device.rotate_signed_prekey(now=now, rng=rng)
        return device

    def _new_prekey(self, kind: int, now: int, rng: Random) -> tuple[KemKeyPair, PrekeyCertificate]:
        validity = (
            SIGNED_PREKEY_VALIDITY_MS if kind == PrekeyKind.SIGNED else ONE_TIME_PREKEY_VALIDITY_MS
        )
        pair = KemKeyPair.generate(rng)
        cert = PrekeyCertificate.issue(
            self.signing_key,
            self.user_id,
            self.device_id,
            kind,
            self.next_prekey_id,
            pair.public,
            created_at=now,
            expires_at=now + validity,
        )
        self.next_prekey_id += 1
        return pair, cert

    def rotate_signed_prekey(self, *, now: int, rng: Random = system_random) -> PrekeyCertificate:
        """Make a new signed prekey to publish; delete the ones past their grace period."""
        self.prune(now=now)
        pair, cert = self._new_prekey(PrekeyKind.SIGNED, now, rng)
        self.signed_prekeys[cert.prekey_id] = (pair, cert)
        return cert

    def current_signed_prekey(self) -> PrekeyCertificate:
        return self.signed_prekeys[max(self.signed_prekeys)][1]

    def signed_prekey_due(self, *, now: int) -> bool:
        return now - self.current_signed_prekey().created_at >= SIGNED_PREKEY_ROTATION_MS

    def new_one_time_prekeys(
        self, count: int, *, now: int, rng: Random = system_random
    ) -> list[PrekeyCertificate]:
        if len(self.one_time_prekeys) + count > MAX_ONE_TIME_PREKEYS:
            raise LimitExceeded(
                "one-time prekeys", len(self.one_time_prekeys) + count, MAX_ONE_TIME_PREKEYS
            )
        made = [self._new_prekey(PrekeyKind.ONE_TIME, now, rng) for _ in range(count)]
        self.one_time_prekeys.update((cert.prekey_id, (pair, cert)) for pair, cert in made)
        return [cert for _, cert in made]

    def prekey(self, kind: int, prekey_id: int) -> KemKeyPair:
        table = self.signed_prekeys if kind == PrekeyKind.SIGNED else self.one_time_prekeys
        if prekey_id not in table:
            raise PrekeyError(f"no prekey {prekey_id} of kind {kind} (used, expired or unknown)")
        return table[prekey_id][0]

    def consume_one_time_prekey(self, prekey_id: int) -> None:
        """Delete a one-time prekey after it opened a message; it can never open another."""
        self.one_time_prekeys.pop(prekey_id, None)

    def prune(self, *, now: int) -> None:
        """Delete private keys nothing may be sealed to any more (signed: after a grace)."""
        for table, grace in (
            (self.signed_prekeys, SIGNED_PREKEY_GRACE_MS),
            (self.one_time_prekeys, 0),
        ):
            for prekey_id in [i for i, (_, c) in table.items() if c.expires_at + grace <= now]:
                del table[prekey_id]

    def restored(
        self, *, now: int, keep_one_time: Iterable[int] = (), rng: Random = system_random
    ) -> PrekeyCertificate:
        """This state came from a keystore older than the last save (a backup, a snapshot).

        One-time prekeys used since that save are back in it: delete every one
        the directory no longer holds (``keep_one_time``: the ids it still
        has; none by default), so none of them opens a recorded distribution
        again. Skip past every prekey id published since the save (a new key
        under a published id would never open what was sealed to the old one)
        and make a new signed prekey, which the caller publishes.
        """
        keep = set(keep_one_time)
        for prekey_id in [i for i in self.one_time_prekeys if i not in keep]:
            del self.one_time_prekeys[prekey_id]
        if self.next_prekey_id + RESTORE_PREKEY_ID_GAP >= 2**32:
            raise LimitExceeded("prekey id", self.next_prekey_id, 2**32 - RESTORE_PREKEY_ID_GAP)
        self.next_prekey_id += RESTORE_PREKEY_ID_GAP
        return self.rotate_signed_prekey(now=now, rng=rng)

    def serialize(self) -> bytes:
        w = Writer().prefix(MessageType.DEVICE_SECRETS).text8(self.user_id).text8(self.device_id)
        w.raw(self.signing_key.private_bytes()).var16(self.certificate.serialize())
        w.u32(self.next_prekey_id)
        for table in (self.signed_prekeys, self.one_time_prekeys):
            w.u16(len(table))
            for prekey_id in sorted(table):
                pair, cert = table[prekey_id]
                w.var16(cert.serialize()).raw(pair.private_bytes())
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> DeviceSecrets:
        r = Reader(data, "device secrets")
        parse_prefix(r, MessageType.DEVICE_SECRETS)
        user_id = check_identifier(r.text8(), "user id")
        device_id = check_identifier(r.text8(), "device id")
        signing_key = SigningKey.from_private_bytes(r.take(48))
        cert = DeviceCertificate.parse(r.var16())
        if cert.device_key != signing_key.public or (cert.user_id, cert.device_id) != (
            user_id,
            device_id,
        ):
            raise MalformedMessage("device certificate does not match the device")
        device = cls(user_id, device_id, signing_key, cert, next_prekey_id=r.u32())
        for kind, table in (
            (PrekeyKind.SIGNED, device.signed_prekeys),
            (PrekeyKind.ONE_TIME, device.one_time_prekeys),
        ):
            previous = 0
            for _ in range(r.u16()):
                prekey_cert = PrekeyCertificate.parse(r.var16())
                pair = KemKeyPair.from_private_bytes(r.take(112))
                if pair.public != prekey_cert.public_key:
                    raise MalformedMessage("prekey private key does not match its certificate")
                if (prekey_cert.user_id, prekey_cert.device_id, prekey_cert.kind) != (
                    user_id,
                    device_id,
                    kind,
                ):
                    raise MalformedMessage("prekey certificate of another device or kind")
                if not previous < prekey_cert.prekey_id < device.next_prekey_id:
                    raise MalformedMessage("prekey ids must ascend and stay below the next id")
                previous = prekey_cert.prekey_id
                table[prekey_cert.prekey_id] = (pair, prekey_cert)
        r.done()
        return device
