"""Profiles: one directory per enrolled device under ``SOTTO_HOME``.

::

    $SOTTO_HOME/<name>/profile.json   non-secret: server, network, user, device, handle,
                                      the identity PUBLIC key (mode 0600 all the same)
    $SOTTO_HOME/<name>/keystore       sealed under the passphrase (sotto.keystore): the
                                      data key, and the identity private key if this
                                      device has it
    $SOTTO_HOME/<name>/state/         sealed under the data key (``vault``): "device" =
                                      DeviceSecrets and the prekey watermark, and the
                                      messaging state (``store``)
    $SOTTO_HOME/<name>/lock           held while one operation changes the state

``SOTTO_HOME`` defaults to ``$XDG_CONFIG_HOME/sotto`` (``~/.config/sotto``).
``SOTTO_PASSPHRASE`` supplies the keystore passphrase; otherwise it is prompted for.
"""

from __future__ import annotations

import contextlib
import getpass
import hmac
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sotto.protocol.device import DeviceSecrets
from sotto.protocol.errors import CorruptKeystore, MalformedMessage
from sotto.protocol.keys import IdentityKeyPair, IdentityPublicKey
from sotto.protocol.keystore import DEFAULT_KDF, MIN_PASSPHRASE_LENGTH, KdfParams

from .encoding import b64d, b64e
from .errors import PassphraseError, ProfileError, ServerResolutionError, UsageError
from .server import ServerConfig
from .vault import Vault

__all__ = [
    "KEYSTORE_FILE",
    "LEGACY_MESSAGING_FILE",
    "PROFILE_FILE",
    "DeviceKeys",
    "Profile",
    "ProfileInfo",
    "check_profile_name",
    "list_profiles",
    "read_passphrase",
    "sotto_home",
]

PROFILE_FILE = "profile.json"
KEYSTORE_FILE = "keystore"
PROFILE_VERSION = 1
# Entries of the earlier single-file keystore, moved into the vault on first unlock.
_ENTRY_DEVICE = "device"
_ENTRY_IDENTITY = "identity"
_ENTRY_PUBLISHED = "published_through"
_LEGACY_MESSAGING = "messaging"
_DEVICE_FILE = "device"
# The messaging state as the earlier format kept it; ``store`` splits it up.
LEGACY_MESSAGING_FILE = "legacy-messaging"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def sotto_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("SOTTO_HOME"):
        return Path(env["SOTTO_HOME"]).expanduser()
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sotto"


def check_profile_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"profile name must be 1-64 characters of [A-Za-z0-9_-]: {name!r}")
    return name


def list_profiles(home: Path | None = None) -> list[str]:
    root = home or sotto_home()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / PROFILE_FILE).is_file())


def read_passphrase(
    *,
    confirm: bool,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """``SOTTO_PASSPHRASE``, else a prompt (twice when creating a keystore)."""
    env = os.environ if environ is None else environ
    passphrase = env.get("SOTTO_PASSPHRASE")
    if passphrase is None:
        try:
            passphrase = prompt("Keystore passphrase: ")
            if confirm and prompt("Repeat passphrase: ") != passphrase:
                raise PassphraseError("the two passphrases differ")
        except EOFError:
            raise PassphraseError(
                "no passphrase: set SOTTO_PASSPHRASE or run in a terminal"
            ) from None
    # Checked up front so enrollment never spends an invite code on a keystore it cannot seal.
    if confirm and len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise PassphraseError(f"passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
    return passphrase


@dataclass(frozen=True)
class ProfileInfo:
    """The non-secret half of a profile."""

    server: ServerConfig
    network_id: str
    user_id: str
    device_id: str
    handle: str
    created_at: int
    holds_identity: bool
    # The user's identity public key (base64url); None until a linked device has learnt it.
    identity_key: str | None = None
    network_name: str | None = None

    def identity_public(self) -> IdentityPublicKey | None:
        if self.identity_key is None:
            return None
        return IdentityPublicKey.parse(b64d(self.identity_key, "identity key"))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "server": self.server.to_json(),
            "network_id": self.network_id,
            "network_name": self.network_name,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "handle": self.handle,
            "created_at": self.created_at,
            "holds_identity": self.holds_identity,
            "identity_key": self.identity_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProfileInfo:
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"unsupported profile version {data.get('version')!r}")
        return cls(
            server=ServerConfig.from_json(data["server"]),
            network_id=str(data["network_id"]),
            network_name=None if data.get("network_name") is None else str(data["network_name"]),
            user_id=str(data["user_id"]),
            device_id=str(data["device_id"]),
            handle=str(data["handle"]),
            created_at=int(data["created_at"]),
            holds_identity=bool(data["holds_identity"]),
            identity_key=None if data.get("identity_key") is None else str(data["identity_key"]),
        )

    def with_identity_key(self, identity: IdentityPublicKey) -> ProfileInfo:
        return replace(self, identity_key=b64e(identity.serialize()))


@dataclass
class DeviceKeys:
    """The secret half: this device's secrets, and the identity key if it holds it."""

    device: DeviceSecrets
    identity: IdentityKeyPair | None = field(default=None, repr=False)
    # Highest one-time prekey id published; kept beside the prekeys so the two never disagree.
    published_through: int = 0


class Profile:
    def __init__(self, name: str, home: Path | None = None) -> None:
        self.name = check_profile_name(name)
        self.path = (home or sotto_home()) / name
        # Set by a flow once the server may know this device: then a failure keeps the keys.
        self.keep = False
        self._vault: Vault | None = None  # unlocked once per process (one key derivation)
        self._unlocked_with = b""

    @property
    def info_path(self) -> Path:
        return self.path / PROFILE_FILE

    @property
    def keystore_path(self) -> Path:
        return self.path / KEYSTORE_FILE

    def check_absent(self) -> None:
        if self.path.exists():
            raise ProfileError(
                f"profile {self.name!r} already exists ({self.path}); choose another --profile"
            )

    @classmethod
    def open(cls, name: str, home: Path | None = None) -> Profile:
        profile = cls(name, home)
        if not profile.info_path.is_file():
            raise ProfileError(f"no profile named {name!r} in {profile.path.parent}")
        return profile

    @classmethod
    @contextlib.contextmanager
    def create(cls, name: str, home: Path | None = None) -> Iterator[Profile]:
        """Reserve a new profile directory; remove it again if the block fails.

        The directory is made exclusively, so two enrollments cannot share a name.
        """
        profile = cls(name, home)
        profile.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            profile.path.mkdir(mode=0o700)
        except FileExistsError:
            profile.check_absent()
            raise
        try:
            yield profile
        except BaseException:
            if not profile.keep:
                shutil.rmtree(profile.path, ignore_errors=True)
            raise

    def read_info(self) -> ProfileInfo:
        try:
            data = json.loads(self.info_path.read_text())
            return ProfileInfo.from_json(data)
        except FileNotFoundError:
            raise ProfileError(f"no profile named {self.name!r} in {self.path.parent}") from None
        except (
            OSError,
            UnicodeDecodeError,
            ValueError,
            KeyError,
            TypeError,
            ServerResolutionError,
        ) as exc:
            raise ProfileError(f"{self.info_path} is damaged: {exc}") from None

    def write_info(self, info: ProfileInfo) -> None:
        temp = self.info_path.with_name(f".{PROFILE_FILE}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(info.to_json(), handle, indent=2)
            handle.write("\n")
        os.replace(temp, self.info_path)

    def unlock(self, passphrase: str) -> Vault:
        """The profile's vault: the passphrase's key derivation runs once per process.

        A keystore of the earlier single-file format (every secret and the
        messaging state under the passphrase) is moved into the vault here.
        """
        if self._vault is not None and hmac.compare_digest(
            self._unlocked_with, passphrase.encode()
        ):
            return self._vault
        vault, entries = Vault.unlock(self.path, passphrase)
        if vault is None:
            vault = self._migrate(entries, passphrase)
        self._vault, self._unlocked_with = vault, passphrase.encode()
        return vault

    def _migrate(self, entries: dict[str, bytes], passphrase: str) -> Vault:
        if _ENTRY_DEVICE not in entries:
            raise CorruptKeystore("keystore does not hold this device's secrets")
        vault = Vault.new(self.path, identity=entries.get(_ENTRY_IDENTITY))
        published = entries.get(_ENTRY_PUBLISHED)
        vault.write(_DEVICE_FILE, _device_file(entries[_ENTRY_DEVICE], published))
        if _LEGACY_MESSAGING in entries:
            vault.write(LEGACY_MESSAGING_FILE, entries[_LEGACY_MESSAGING])
        # Last: until the new keystore is in place the old one still opens everything.
        vault.seal(passphrase)
        return vault

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise ProfileError(f"profile {self.name!r} is not unlocked")
        return self._vault

    def load_keys(self, passphrase: str) -> DeviceKeys:
        """Open the keystore; KeystoreError (wrong passphrase, corrupt, permissions) passes up."""
        vault = self.unlock(passphrase)
        return self.read_keys(vault)

    def read_keys(self, vault: Vault) -> DeviceKeys:
        raw = vault.read(_DEVICE_FILE)
        if raw is None:
            raise CorruptKeystore("the profile does not hold this device's secrets")
        try:
            data = json.loads(raw)
            device = DeviceSecrets.parse(b64d(data["device"], "device secrets"))
            through = int(data["published_through"])
            identity = None
            if vault.identity_private is not None:
                identity = IdentityKeyPair.from_private_bytes(vault.identity_private)
        except (KeyError, MalformedMessage, ValueError, TypeError):
            raise CorruptKeystore("the profile's device secrets are damaged") from None
        return DeviceKeys(device, identity, through)

    def save_keys(
        self, keys: DeviceKeys, passphrase: str, *, params: KdfParams = DEFAULT_KDF
    ) -> None:
        """Write the device's secrets; a new profile's keystore is made (one derivation)."""
        if self._vault is None and not self.keystore_path.exists():
            identity = keys.identity.private_bytes() if keys.identity is not None else None
            vault = Vault.new(self.path, identity=identity)
            self.write_keys(vault, keys)
            vault.seal(passphrase, params=params)
            self._vault, self._unlocked_with = vault, passphrase.encode()
            return
        self.write_keys(self.unlock(passphrase), keys)

    def write_keys(self, vault: Vault, keys: DeviceKeys) -> None:
        vault.write(
            _DEVICE_FILE,
            _device_file(keys.device.serialize(), keys.published_through.to_bytes(4, "big")),
        )


def _device_file(device: bytes, published: bytes | None) -> bytes:
    through = int.from_bytes(published or b"", "big")
    return json.dumps({"device": b64e(device), "published_through": through}).encode()
