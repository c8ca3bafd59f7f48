"""Many people on a stack at the default limits, each with the real SDK.

Enrollment goes through the real routes, each person from their own
loopback address (``seed_device``); a person's further devices can be
written through the storage layer with identity-signed certificates (as a
link would make them), since the per-device link limit is not what these
tests measure. Every device gets a profile on disk and opens a ``Messenger``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sotto.client.encoding import b64e
from sotto.client.messenger import Messenger
from sotto.client.profile import DeviceKeys, Profile, ProfileInfo
from sotto.client.server import ServerConfig, from_endpoints
from sotto.protocol.device import DeviceSecrets
from sotto_server.dal.directory import DeviceRecord, DirectoryStore
from sotto_server.logic.identity import signing_key_der

from .stack import SeededDevice, Socket, Stack, publish_prekeys, seed_device

__all__ = ["PASSPHRASE", "add_device", "messenger_for", "seed_person", "server_of"]

PASSPHRASE = "correct horse battery"


@dataclass
class Seeded:
    """A user's devices, the first holding the identity."""

    devices: list[SeededDevice]

    @property
    def user_id(self) -> str:
        return self.devices[0].user_id


def server_of(stack: Stack) -> ServerConfig:
    return from_endpoints(stack.log_path.parent / "endpoints.json")


def seed_person(stack: Stack, network_id: str, *, prekeys: int = 5) -> Seeded:
    device = seed_device(stack, network_id=network_id)
    if prekeys:
        with Socket(stack, device) as socket:
            publish_prekeys(socket, prekeys)
    return Seeded([device])


def add_device(stack: Stack, person: Seeded) -> SeededDevice:
    """Another device of the person, certified by their identity, written to the directory.

    The directory stream then adds it to the person's conversation rosters,
    as it would after a link.
    """
    first = person.devices[0]
    assert first.identity is not None
    device_id = f"dev-{secrets.token_hex(6)}"
    now = int(time.time() * 1000)
    device = DeviceSecrets.create(first.identity, first.user_id, device_id, now=now)
    directory = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    directory.put_device(
        DeviceRecord(
            device_id=device_id,
            user_id=first.user_id,
            network_id=first.network_id,
            signing_key=signing_key_der(device.certificate.device_key),
            status="active",
            created_at=now,
            certificate=device.certificate.serialize(),
        )
    )
    signed = device.current_signed_prekey()
    directory.put_prekeys(
        device_id, (signed.prekey_id, signed.expires_at, signed.serialize()), [], now
    )
    seeded = SeededDevice(
        device_id, first.user_id, first.network_id, device.signing_key.key, first.identity, device
    )
    person.devices.append(seeded)
    return seeded


def messenger_for(stack: Stack, home: Path, device: SeededDevice, **kwargs: object) -> Messenger:
    """A profile for a seeded device on disk, opened as the SDK opens it."""
    assert device.secrets is not None
    assert device.identity is not None
    name = f"p-{device.device_id}"
    # Every one-time prekey the seeding made was published.
    published = [cert.prekey_id for _, cert in device.secrets.one_time_prekeys.values()]
    keys = DeviceKeys(device.secrets, device.identity, published_through=max(published, default=0))
    if not (home / name).exists():
        info = ProfileInfo(
            server=server_of(stack),
            network_id=device.network_id,
            user_id=device.user_id,
            device_id=device.device_id,
            handle=name,
            created_at=int(time.time() * 1000),
            holds_identity=True,
            identity_key=b64e(device.identity.public.serialize()),
        )
        with Profile.create(name, home) as profile:
            profile.write_info(info)
            profile.save_keys(keys, PASSPHRASE)
    profile = Profile.open(name, home)
    return Messenger.open(
        profile,
        profile.read_info(),
        profile.load_keys(PASSPHRASE),
        PASSPHRASE,
        **kwargs,
    )
