"""After a conversation with distinctive plaintext, no DynamoDB item, S3 object or line of
the stack's log holds any of it, nor any private key or chain key from the keystores,
in raw, hex or base64 (standard and URL-safe, at every byte alignment) form.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from sotto.client.messenger import Messenger
from tests.support.stack import Stack

from .conftest import Team, wait_for

PLAINTEXTS = [
    "zanzibar-quokka-7431 meets at the blue door",
    "the password is Xylophone!Marmalade#9",
    "burn-after-reading: ultraviolet-pangolin",
]


def _forms(secret: bytes) -> Iterator[bytes]:
    yield secret
    yield secret.hex().encode()
    yield secret.hex().upper().encode()
    for shift in range(3):
        # The secret at each alignment inside a longer base64 text: keep only the
        # characters that depend on the secret's bytes alone.
        padded = bytes(shift) + secret
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(padded).rstrip(b"=")
            start = -(-shift * 4 // 3)  # chars touched by the leading filler
            end = len(text) - (1 if (len(padded) % 3) else 0)
            core = text[start + 1 : end]
            if len(core) >= 16:
                yield core


BLOCK = 16


def _blocks(data: bytes) -> set[bytes]:
    """``data``'s 16-byte blocks at multiples of 16: any text of 31 bytes or more inside
    ``data`` covers one of them whole, at one of its first 16 offsets."""
    return {data[i : i + BLOCK] for i in range(0, len(data) - BLOCK + 1, BLOCK)}


def _contains(data: bytes, blocks: set[bytes], form: bytes) -> bool:
    # The index only rules out; a candidate is confirmed by a real search. Keys, chain
    # keys and their encodings are >= 31 bytes, so the scan no longer grows with the
    # number of needles times the (session-long) log.
    if len(form) >= 2 * BLOCK - 1 and not any(form[o : o + BLOCK] in blocks for o in range(BLOCK)):
        return False
    return form in data


def _key_material(devices: list[Messenger]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for device in devices:
        keys, name = device.keys, device.profile.name
        found[f"{name} device signing key"] = keys.device.signing_key.private_bytes()
        if keys.identity is not None:
            private = keys.identity.private_bytes()
            found[f"{name} identity ECDSA key"] = private[:48]
            found[f"{name} identity ML-DSA seed"] = private[48:]
        for table in (keys.device.signed_prekeys, keys.device.one_time_prekeys):
            for prekey_id, (pair, _cert) in table.items():
                private = pair.private_bytes()
                found[f"{name} KEM prekey {prekey_id} ML-KEM seed"] = private[:64]
                found[f"{name} KEM prekey {prekey_id} P-384 key"] = private[64:]
        for cid in device.state.conversations:
            engine = device.engine(cid)
            chains: list[Any] = [engine._chain, *engine._chains.values()]
            for chain in chains:
                if chain is not None:
                    found[f"{name} chain key {chain.chain_id.hex()}"] = chain.chain_key
    return found


def _flatten(value: Any) -> Iterator[bytes]:
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, str):
        yield value.encode()
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key).encode()
            yield from _flatten(item)
    elif isinstance(value, list | set | tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield str(value).encode()


def _stored(stack: Stack) -> dict[str, bytes]:
    """Every DynamoDB item of every table, every S3 object, the log: name -> bytes."""
    corpus: dict[str, bytes] = {}
    dynamodb = stack.client("dynamodb")
    for table in dynamodb.list_tables()["TableNames"]:
        chunks: list[bytes] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                chunks.extend(_flatten(item))
        corpus[f"dynamodb:{table}"] = b"\n".join(chunks)
    s3 = stack.client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket["Name"], Key=obj["Key"])["Body"].read()
                corpus[f"s3:{bucket['Name']}/{obj['Key']}"] = body
    corpus["log"] = stack.log().encode()
    return corpus


def test_no_plaintext_and_no_key_material_is_stored_or_logged(stack: Stack, team: Team) -> None:
    a1, a2 = team.alice.devices
    b1, b2 = team.bob.devices
    devices = [a1, a2, b1, b2, *team.carol.devices]
    snapshots: dict[str, bytes] = {}

    # GIVEN a direct conversation and a room carrying distinctive plaintext
    direct = a1.send_text(team.bob.handle, PLAINTEXTS[0]).conversation_id
    snapshots |= _key_material(devices)  # fresh chain keys, before they ratchet on
    room = b1.create_room("scan", [team.alice.user_id, team.carol.user_id])
    b1.send_text(room, PLAINTEXTS[1])
    snapshots |= _key_material(devices)
    a2.send_text(room, PLAINTEXTS[2], burn_s=60)
    for device in devices:
        wait_for(device, 1, room, timeout=3)
        device.sync(read=True)
    snapshots |= _key_material(devices)
    assert direct

    # WHEN everything the server holds or logged is scanned
    corpus = _stored(stack)
    assert any(name.startswith("dynamodb:") and data for name, data in corpus.items())

    # THEN no plaintext, key or chain key appears in any form
    needles: dict[str, bytes] = {f"plaintext {i}": p.encode() for i, p in enumerate(PLAINTEXTS)}
    needles |= snapshots
    scan = [(where, data, _blocks(data)) for where, data in corpus.items()]
    leaks = [
        f"{what} in {where}"
        for what, secret in needles.items()
        for form in _forms(secret)
        for where, data, blocks in scan
        if _contains(data, blocks, form)
    ]
    assert leaks == []
    assert len(snapshots) > 20  # the scan looked for real key material


def test_the_scan_finds_a_secret_hidden_in_any_base64_alignment() -> None:
    secret = bytes(range(40, 80))
    for shift in range(3):
        blob = b"prefix" + bytes(shift) + secret + b"suffix"
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            assert any(form in encode(blob) for form in _forms(secret))
            encoded = b"x" * shift + encode(blob)  # and through the index, at any offset
            assert any(_contains(encoded, _blocks(encoded), f) for f in _forms(secret))
