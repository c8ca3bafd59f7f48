"""Fingerprints people compare: the identity key's, and a device signing key's.

The identity fingerprint is the protocol's (docs/protocol.md §2). A device
key has none in the protocol yet, so linking shows SHA-384 over a labelled
encoding of the key, truncated to 128 bits: both devices run this same code,
and comparing it defeats a server that swaps the key in a link request.
"""

from __future__ import annotations

import hashlib
import secrets

from sotto.protocol.keys import IdentityPublicKey, VerifyingKey
from sotto.protocol.wire import domain

__all__ = ["device_key_fingerprint", "format_fingerprint", "identity_fingerprint", "new_device_id"]


def format_fingerprint(data: bytes) -> str:
    """Hex in groups of four: easy to read aloud, and no ambiguous letters."""
    text = data.hex()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def device_key_fingerprint(key: VerifyingKey) -> str:
    digest = hashlib.sha384(domain("device-key-fingerprint") + key.serialize()).digest()
    return format_fingerprint(digest[:16])


def identity_fingerprint(identity: IdentityPublicKey) -> str:
    return format_fingerprint(identity.fingerprint)


def new_device_id() -> str:
    # 48 random bits: ids only need to be unique per user, and the server refuses a reused one.
    return f"dev-{secrets.token_hex(6)}"
