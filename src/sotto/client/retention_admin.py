"""``sotto admin retention``: a network's retention identity, made on this machine.

``enable`` generates the records officer's identity and the first retention
device (its KEM key is what every chain is also sealed to), wraps their
private keys with KMS under the archive key (encryption context: the
network and what the key is), sends the public parts and the ciphertexts to
the server and forgets the keys. ``rotate`` unwraps the officer's key (so it
needs the compliance role's ``kms:Decrypt``), certifies a new generation and
forgets both. No private key ever reaches the server in the clear.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sotto.frames.answers_admin import (
    RetentionAdminAnswer,
    RetentionGenerationItem,
    RetentionOffAnswer,
)
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import RetentionIdentity, RetentionSecrets, open_officer

from .api import AdminApi
from .encoding import b64d, b64e
from .errors import ClientError as SottoClientError
from .http import LOCAL_CREDENTIALS as _LOCAL_CREDENTIALS
from .prekeys import now_ms
from .server import ServerConfig

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = [
    "OFFICER_PURPOSE",
    "RETENTION_PURPOSE",
    "ArchiveKms",
    "RetentionShown",
    "archive_kms",
    "disable",
    "enable",
    "rotate",
    "served_identity",
    "show",
]

OFFICER_PURPOSE = "records-officer"
RETENTION_PURPOSE = "retention-key"


class RetentionAdminError(SottoClientError):
    """KMS refused, or the server's retention identity is not what this machine expects."""


class RetentionShown(RetentionAdminAnswer):
    """``show``: the server's answer, and when the served key expires (this machine's)."""

    key_expires_at: int
    key_days_left: int


class ArchiveKms:
    """Wraps and unwraps retention keys with the archive key; the context binds each
    ciphertext to its network and purpose, so one cannot stand in for another."""

    def __init__(self, client: KMSClient, key_id: str) -> None:
        self._client = client
        self.key_id = key_id

    @staticmethod
    def context(network_id: str, purpose: str, key_name: str) -> dict[str, str]:
        return {"sotto:network": network_id, "sotto:purpose": purpose, "sotto:key": key_name}

    def wrap(self, plaintext: bytes, network_id: str, purpose: str, key_name: str) -> bytes:
        try:
            answer = self._client.encrypt(
                KeyId=self.key_id,
                Plaintext=plaintext,
                EncryptionContext=self.context(network_id, purpose, key_name),
            )
        except (BotoCoreError, ClientError) as exc:
            raise RetentionAdminError(f"KMS would not wrap the {purpose} key: {exc}") from None
        return bytes(answer["CiphertextBlob"])

    def unwrap(self, blob: bytes, network_id: str, purpose: str, key_name: str) -> bytes:
        try:
            answer = self._client.decrypt(
                KeyId=self.key_id,
                CiphertextBlob=blob,
                EncryptionContext=self.context(network_id, purpose, key_name),
            )
        except (BotoCoreError, ClientError) as exc:
            raise RetentionAdminError(
                f"KMS would not unwrap the {purpose} key (only the compliance role may): {exc}"
            ) from None
        return bytes(answer["Plaintext"])


def archive_kms(spec: str, server: ServerConfig, key_id: str | None) -> ArchiveKms:
    """KMS with the archive key: the local stack's (from its endpoints file) or AWS's."""
    if server.local:
        path = Path(spec).expanduser()
        endpoints = json.loads((path / "endpoints.json" if path.is_dir() else path).read_text())
        client = boto3.session.Session().client(
            "kms",
            endpoint_url=endpoints["aws"],
            region_name=server.region or "us-east-1",
            aws_access_key_id=_LOCAL_CREDENTIALS[0],
            aws_secret_access_key=_LOCAL_CREDENTIALS[1],
        )
        return ArchiveKms(client, key_id or endpoints["resources"]["keys"]["ArchiveKey"])
    if not key_id:
        raise RetentionAdminError(
            "name the archive key: --archive-key alias/sotto/archive/STAGE (or its ARN)"
        )
    return ArchiveKms(boto3.session.Session().client("kms", region_name=server.region), key_id)


def _new_device_id() -> str:
    return f"rtn-{secrets.token_hex(6)}"


def enable(api: AdminApi, kms: ArchiveKms, network_id: str, years: int) -> RetentionAdminAnswer:
    current = api.get_retention(network_id)
    if current["status"] != "off":
        # Same officer, same keys: only the switch moves.
        return api.enable_retention(network_id, {"years": years})
    made = RetentionSecrets.create(network_id, _new_device_id(), now=now_ms())
    identity = made.identity(network_id)
    body = {
        "years": years,
        "officer_identity": b64e(identity.officer.serialize()),
        "certificate": b64e(identity.certificate.serialize()),
        "prekey": b64e(identity.prekey.serialize()),
        "wrapped_device_key": b64e(
            kms.wrap(made.device_key_bytes(), network_id, RETENTION_PURPOSE, identity.device_id)
        ),
        "wrapped_officer_key": b64e(
            kms.wrap(made.officer_key_bytes(), network_id, OFFICER_PURPOSE, "officer")
        ),
    }
    del made  # the keys live on only as KMS ciphertext
    return api.enable_retention(network_id, body)


def served_identity(
    answer: RetentionAdminAnswer, generation: RetentionGenerationItem | None = None
) -> RetentionIdentity:
    """The retention identity the server serves: its current generation's, or
    ``generation``'s (the officer is the same for every generation)."""
    held = answer if generation is None else generation
    return RetentionIdentity(
        answer["network_id"],
        IdentityPublicKey.parse(b64d(answer["officer_identity"], "officer_identity")),
        DeviceCertificate.parse(b64d(held["certificate"], "certificate")),
        PrekeyCertificate.parse(b64d(held["prekey"], "prekey")),
    )


def rotate(
    api: AdminApi, kms: ArchiveKms, network_id: str, years: int | None = None
) -> RetentionAdminAnswer:
    current = api.get_retention(network_id)
    if current["status"] == "off":
        raise RetentionAdminError(f"retention was never enabled for {network_id}")
    identity = served_identity(current)
    wrapped = b64d(current["wrapped_officer_key"], "wrapped officer key")
    officer = open_officer(identity, kms.unwrap(wrapped, network_id, OFFICER_PURPOSE, "officer"))
    made = RetentionSecrets.create(network_id, _new_device_id(), now=now_ms(), officer=officer)
    new = made.identity(network_id)
    body: dict[str, Any] = {
        "previous_generation": current["generation"],
        "certificate": b64e(new.certificate.serialize()),
        "prekey": b64e(new.prekey.serialize()),
        "wrapped_device_key": b64e(
            kms.wrap(made.device_key_bytes(), network_id, RETENTION_PURPOSE, new.device_id)
        ),
    }
    if years is not None:
        body["years"] = years
    del made, officer
    return api.rotate_retention(network_id, body)


def disable(api: AdminApi, network_id: str) -> RetentionAdminAnswer:
    return api.disable_retention(network_id)


def show(api: AdminApi, network_id: str) -> RetentionOffAnswer | RetentionShown:
    """The server's answer, plus when the served key expires (rotate before: after it,
    clients send nothing in the network)."""
    answer = api.get_retention(network_id)
    if answer["status"] == "off":
        return answer
    expires_at = served_identity(answer).expires_at
    days_left = max(0, expires_at - now_ms()) // 86_400_000
    return {**answer, "key_expires_at": expires_at, "key_days_left": days_left}
