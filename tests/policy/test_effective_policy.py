"""The strictest-applies rule and the refusal wording, on the pure policy module."""

from __future__ import annotations

import pytest

from sotto_server.logic.errors import Refused
from sotto_server.logic.policy import (
    EffectivePolicy,
    PolicyDocuments,
    check_device_count,
    check_envelope_timers,
    combine,
    format_duration,
)


def _policy(network: dict[str, object], **groups: dict[str, object]) -> EffectivePolicy:
    return combine("net-1", "usr-1", PolicyDocuments(network, groups))


def test_no_document_constrains_nothing() -> None:
    policy = _policy({})
    assert policy["max_expiry_s"] is None
    assert policy["files_allowed"] is True
    assert policy["max_file_bytes"] == 5 * 1024**3
    assert policy["read_receipts"] == "enabled"
    assert policy.sources == {}


def test_strictest_of_network_and_groups_applies_knob_by_knob() -> None:
    policy = _policy(
        {"max_expiry_s": 86400, "files_allowed": True, "read_receipts": "forced"},
        ops={"max_expiry_s": 3600, "max_file_bytes": 1024},
        field={"max_expiry_s": 7200, "files_allowed": False, "read_receipts": "disabled"},
    )
    assert policy["max_expiry_s"] == 3600
    assert policy.sources["max_expiry_s"] == "ops"
    assert policy["files_allowed"] is False
    assert policy.sources["files_allowed"] == "field"
    assert policy["max_file_bytes"] == 1024
    assert policy["read_receipts"] == "disabled"


def test_a_group_never_loosens_the_network() -> None:
    policy = _policy({"max_burn_s": 60, "calls_allowed": False}, loose={"max_burn_s": 3600})
    assert policy["max_burn_s"] == 60
    assert policy.sources["max_burn_s"] == "network"
    assert policy["calls_allowed"] is False


def test_forced_receipts_are_stricter_than_enabled() -> None:
    assert _policy({}, a={"read_receipts": "forced"})["read_receipts"] == "forced"


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600, "1h"), (5400, "90m"), (86400, "1d"), (45, "45s"), (90, "90s")]
)
def test_durations_are_said_in_words(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_refusals_name_the_limit_and_whose_it_is() -> None:
    network = _policy({"max_expiry_s": 3600, "max_burn_s": 600})
    with pytest.raises(Refused, match=r"^expiry 2h is over your network's limit of 1h$"):
        check_envelope_timers(network, timestamp=0, expires_at=7_200_000, burn_after_read_s=0)
    with pytest.raises(Refused, match=r"never expires is over your network's limit of 1h"):
        check_envelope_timers(network, timestamp=0, expires_at=0, burn_after_read_s=0)
    with pytest.raises(Refused, match=r"^burn-on-read 1h is over your network's limit of 10m$"):
        check_envelope_timers(network, timestamp=0, expires_at=1000, burn_after_read_s=3600)
    check_envelope_timers(network, timestamp=0, expires_at=3_600_000, burn_after_read_s=600)
    grouped = _policy({}, ops={"max_devices": 2})
    with pytest.raises(Refused, match="security group ops's limit of 2 devices per user"):
        check_device_count(grouped, 2)
    check_device_count(grouped, 1)


def test_client_refuses_content_the_policy_forbids_in_words() -> None:
    from sotto.client.policy import PolicyError, parse_policy
    from sotto.protocol.content import CallSignal, File, Location, Text

    policy = parse_policy(
        {
            "policy": {"max_file_bytes": 1024**2, "location_allowed": False},
            "sources": {"max_file_bytes": "ops", "location_allowed": "network"},
        }
    )
    big = File("obj", b"k" * 32, b"d" * 48, 2 * 1024**2, "a.bin", "application/octet-stream")
    with pytest.raises(PolicyError, match=r"^a file of 2 MiB is over security group ops's limit"):
        policy.check_content(big)
    with pytest.raises(PolicyError, match="location sharing is not allowed by your network's"):
        policy.check_content(Location(515_000_000, -1_200_000, 10, 0))
    policy.check_content(Text("fine"))
    no_calls = parse_policy({"policy": {"calls_allowed": False, "files_allowed": False}})
    with pytest.raises(PolicyError, match="calls are not allowed"):
        no_calls.check_content(CallSignal(b"c" * 16, CallSignal.OFFER, "v=0"))
    with pytest.raises(PolicyError, match="files are not allowed"):
        no_calls.check_content(big)


def test_a_malformed_policy_frame_is_refused() -> None:
    from sotto.client.policy import parse_policy

    bad: list[tuple[dict[str, object], str]] = [
        ({"policy": {"max_expiry_s": "1h"}}, "a limit is a positive integer"),
        ({"policy": {"read_receipts": "sometimes"}}, "read_receipts is"),
        ({"policy": {"files_allowed": 1}}, "a switch is true or false"),
        ({"policy": []}, "carries a policy object"),
    ]
    for frame, problem in bad:
        with pytest.raises(ValueError, match=problem):
            parse_policy(frame)
    # A source that is not a group name is never shown.
    shown = parse_policy({"policy": {}, "sources": {"max_burn_s": "\x1b[2Jevil"}})
    assert shown.sources == {}
