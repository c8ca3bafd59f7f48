"""Offline profiles for unit tests: real keys, no server."""

from __future__ import annotations

from pathlib import Path

from sotto.client.encoding import b64e
from sotto.client.prekeys import now_ms
from sotto.client.profile import DeviceKeys, Profile, ProfileInfo
from sotto.client.server import ServerConfig
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair

from .conftest import PASSPHRASE

SERVER = ServerConfig(
    http="http://127.0.0.1:9", websocket="ws://127.0.0.1:9", audience="api/stage", local=True
)


def make_profile(
    home: Path, name: str = "alice", *, server: ServerConfig = SERVER
) -> tuple[Profile, ProfileInfo, DeviceKeys]:
    identity = IdentityKeyPair.generate()
    device = DeviceSecrets.create(identity, "usr-1", "dev-1", now=now_ms())
    keys = DeviceKeys(device, identity)
    info = ProfileInfo(
        server=server,
        network_id="net-1",
        user_id="usr-1",
        device_id="dev-1",
        handle=name,
        created_at=now_ms(),
        holds_identity=True,
        identity_key=b64e(identity.public.serialize()),
    )
    with Profile.create(name, home) as profile:
        profile.write_info(info)
        profile.save_keys(keys, PASSPHRASE)
    return profile, info, keys
