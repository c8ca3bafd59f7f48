"""The pure rules of files: part sizes, the policy hook, upload cutting and resume state."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from sotto.client import files
from sotto.client.errors import MessagingError
from sotto.protocol.attachments import Decryptor, Encryptor, encrypted_size
from sotto_server.logic.files import (
    MAX_PARTS,
    MIN_PART_SIZE,
    FileLimits,
    file_limits,
    format_size,
    part_size_for,
)
from sotto_server.logic.policy import PolicyDocuments

MIB = 1024 * 1024


def test_part_size_is_8_mib_until_a_file_needs_more_than_1000_parts() -> None:
    assert part_size_for(1) == MIN_PART_SIZE
    assert part_size_for(5 * 1024**3) == MIN_PART_SIZE  # 640 parts
    big = 20 * 1024**3
    size = part_size_for(big)
    assert size % MIB == 0
    assert -(-big // size) <= MAX_PARTS


class Documents:
    """A directory holding the given policy documents (``PolicyStore``)."""

    def __init__(self, network: dict[str, Any], groups: dict[str, dict[str, Any]]) -> None:
        self.documents = PolicyDocuments(network, groups)

    def policy_documents(self, network_id: str, groups: Iterable[str]) -> PolicyDocuments:
        return PolicyDocuments(
            self.documents.network, {g: self.documents.groups[g] for g in groups}
        )

    def user_groups(self, user_id: str) -> frozenset[str] | None:
        return frozenset(self.documents.groups)


def limits_under(network: dict[str, Any], **groups: dict[str, Any]) -> FileLimits:
    stores = cast(Any, SimpleNamespace(directory=Documents(network, groups)))
    caller = cast(Any, SimpleNamespace(network_id="net-x", user_id="usr-x", user=None))
    return file_limits(stores, caller)


def test_default_policy_allows_files_to_5_gib_and_locations() -> None:
    limits = limits_under({})
    assert limits == FileLimits(files_allowed=True, max_file_bytes=5 * 1024**3)
    assert limits.location_allowed


def test_the_strictest_policy_sets_the_file_limits_and_says_whose() -> None:
    limits = limits_under({"max_file_bytes": 2 * 1024**3}, ops={"max_file_bytes": 10 * MIB})
    assert limits.max_file_bytes == 10 * MIB
    assert limits.whose == "security group ops's"
    assert not limits_under({"files_allowed": False}).files_allowed
    assert not limits_under({}, ops={"location_allowed": False}).location_allowed
    assert format_size(10 * MIB) == "10 MiB"
    assert format_size(5 * 1024**3) == "5 GiB"
    assert format_size(1536) == "1.5 KiB"
    # The stored stream of the largest file fits, at any chunk size.
    assert encrypted_size(limits.max_file_bytes, 4096) <= limits.max_object_bytes


def test_upload_parts_concatenate_to_the_stream_that_decrypts() -> None:
    plaintext = bytes(range(256)) * (3 * MIB // 256 + 7)
    encryptor = Encryptor(bytes(32), rng=lambda n: bytes(n))
    parts = list(files._parts(io.BytesIO(plaintext), encryptor, 1 * MIB))
    assert [n for n, _ in parts] == list(range(1, len(parts) + 1))
    assert all(len(p) == MIB for _, p in parts[:-1])
    stream = b"".join(bytes(p) for _, p in parts)
    assert len(stream) == encrypted_size(len(plaintext))
    decryptor = Decryptor(bytes(32))
    out = decryptor.update(stream) + decryptor.finalize(
        expected_digest=encryptor.digest, expected_size=len(plaintext)
    )
    assert out == plaintext
    assert hashlib.sha384(stream).digest() == encryptor.digest


def test_etags_digest_is_order_sensitive() -> None:
    assert files.etags_digest(['"a"', '"b"']) != files.etags_digest(['"b"', '"a"'])
    assert files.etags_digest(['"a"']) == hashlib.sha256(b'"a"\n').hexdigest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("51.5007,-0.1246", (515_007_000, -1_246_000)), ("-90,180", (-900_000_000, 1_800_000_000))],
)
def test_coordinates_parse_to_degrees_times_ten_million(
    text: str, expected: tuple[int, int]
) -> None:
    assert files.parse_coordinates(text) == expected


@pytest.mark.parametrize("text", ["91,0", "0,181", "north", "1,2,3"])
def test_bad_coordinates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"latitude|LAT,LON"):
        files.parse_coordinates(text)


def test_place_file_never_replaces_and_exact_names_are_refused_when_taken(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("theirs")
    staged = tmp_path / "staged"
    staged.write_text("ours")
    placed = files.place_file(staged, tmp_path, "a.txt")
    assert placed.name == "a (2).txt"
    assert (tmp_path / "a.txt").read_text() == "theirs"
    assert not staged.exists()
    staged.write_text("ours")
    with pytest.raises(MessagingError, match="not overwritten"):
        files.place_file(staged, tmp_path, "a.txt", exact=True)
