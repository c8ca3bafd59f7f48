"""Network policy: the network default and named security groups, and a user's effective policy.

A policy document names only the knobs it constrains; a knob it leaves out
does not constrain. A user's effective policy is the strictest of the
network default and every security group the user belongs to, knob by knob
(a group can tighten what the network allows, never loosen it), and it
remembers which document set each limit, so a refusal can name it
(``expiry 2h is over your network's limit of 1h``).

Strictest, per knob: the smaller maximum (expiry, burn-on-read, file size,
devices per user); "not allowed" over "allowed" (files, location, calls);
for read receipts ``disabled`` over ``forced`` over ``enabled`` (both of the
first two take the choice away from the person; disabled also sends less).

Retention is not a knob here: it is on for a network exactly when its
retention identity is enabled (``sotto admin retention enable``).

This module is pure: storage comes in as a small Protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import ErrorCode, Refused

if TYPE_CHECKING:
    from sotto.frames.answers import PolicyFields

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "KNOBS",
    "EffectivePolicy",
    "PolicyDocuments",
    "PolicyStore",
    "ReadReceipts",
    "check_device_count",
    "check_envelope_timers",
    "combine",
    "dump_document",
    "effective_policy",
    "format_duration",
    "load_document",
]

ReadReceipts = Literal["disabled", "enabled", "forced"]
# Files up to 5 GiB (the product's limit) unless a policy says less.
DEFAULT_MAX_FILE_BYTES = 5 * 1024**3
# Knob -> its permissive default (None: no limit).
KNOBS: dict[str, Any] = {
    "max_expiry_s": None,
    "max_burn_s": None,
    "files_allowed": True,
    "max_file_bytes": DEFAULT_MAX_FILE_BYTES,
    "location_allowed": True,
    "calls_allowed": True,
    "read_receipts": "enabled",
    "max_devices": None,
}
_MAXIMA = ("max_expiry_s", "max_burn_s", "max_file_bytes", "max_devices")
_ALLOWED = ("files_allowed", "location_allowed", "calls_allowed")
_RECEIPT_STRICTNESS: dict[str, int] = {"enabled": 0, "forced": 1, "disabled": 2}
NETWORK_SOURCE = "network"


def load_document(raw: str | None) -> dict[str, Any]:
    """A stored document (JSON); unknown knobs are dropped, so an old reader stays safe."""
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("a policy document is a JSON object")
    return {name: value[name] for name in KNOBS if name in value}


def dump_document(document: Mapping[str, Any]) -> str:
    return json.dumps({k: document[k] for k in KNOBS if k in document}, sort_keys=True)


@dataclass(frozen=True)
class PolicyDocuments:
    """What applies to one user: the network default and each of the user's groups."""

    network: Mapping[str, Any]
    groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Bumped on every change of the network's documents or memberships.
    version: int = 0


@dataclass(frozen=True)
class EffectivePolicy:
    """Every knob's value for one user, and which document set each constrained one."""

    network_id: str
    user_id: str
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    groups: tuple[str, ...] = ()
    version: int = 0

    def __getitem__(self, knob: str) -> Any:
        return self.values[knob]

    def whose(self, knob: str) -> str:
        """``your network's`` or ``security group ops's``: who set this limit, in words."""
        source = self.sources.get(knob, NETWORK_SOURCE)
        return "your network's" if source == NETWORK_SOURCE else f"security group {source}'s"

    def to_json(self) -> PolicyFields:
        return {
            "network_id": self.network_id,
            "user_id": self.user_id,
            "policy": dict(self.values),
            "sources": dict(self.sources),
            "groups": list(self.groups),
            "version": self.version,
        }


def _stricter(knob: str, current: Any, candidate: Any) -> bool:
    if knob in _MAXIMA:
        return current is None or candidate < current
    if knob in _ALLOWED:
        return current and not candidate
    return _RECEIPT_STRICTNESS[candidate] > _RECEIPT_STRICTNESS[current]


def combine(network_id: str, user_id: str, documents: PolicyDocuments) -> EffectivePolicy:
    """The strictest of the documents, knob by knob (ties go to the network, then by name)."""
    values = dict(KNOBS)
    sources: dict[str, str] = {}
    ordered: list[tuple[str, Mapping[str, Any]]] = [(NETWORK_SOURCE, documents.network)]
    ordered += sorted(documents.groups.items())
    for source, document in ordered:
        for knob, value in document.items():
            if knob in KNOBS and value is not None and _stricter(knob, values[knob], value):
                values[knob] = value
                sources[knob] = source
    return EffectivePolicy(
        network_id=network_id,
        user_id=user_id,
        values=values,
        sources=sources,
        groups=tuple(sorted(documents.groups)),
        version=documents.version,
    )


class PolicyStore(Protocol):
    def policy_documents(self, network_id: str, groups: Iterable[str]) -> PolicyDocuments: ...

    def user_groups(self, user_id: str) -> frozenset[str] | None: ...


def effective_policy(
    store: PolicyStore,
    network_id: str,
    user_id: str,
    *,
    groups: frozenset[str] | None = None,
) -> EffectivePolicy:
    """The one place the server learns what a user may do (files, expiry, devices, ...).

    ``groups``: the user's security groups when the caller already read the
    user (a frame's standing check did); otherwise they are read here. One
    BatchGetItem of the network default and the groups' documents.
    """
    if groups is None:
        groups = store.user_groups(user_id) or frozenset()
    return combine(network_id, user_id, store.policy_documents(network_id, groups))


def format_duration(seconds: int) -> str:
    """``3600`` -> ``1h``, ``5400`` -> ``90m``, ``86400`` -> ``1d``, ``45`` -> ``45s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_envelope_timers(
    policy: EffectivePolicy,
    *,
    timestamp: int,
    expires_at: int,
    burn_after_read_s: int,
    request_id: str | None = None,
) -> None:
    """Refuse an envelope whose expiry or burn-on-read is over the caller's limits, in words."""
    max_expiry = policy["max_expiry_s"]
    if max_expiry is not None:
        if not expires_at:
            raise Refused(
                ErrorCode.POLICY,
                f"a message that never expires is over {policy.whose('max_expiry_s')} "
                f"limit of {format_duration(max_expiry)}",
                request_id,
            )
        # Whole seconds, rounded up: 3600.4 s is over a 1h limit.
        expiry_s = -(-(expires_at - timestamp) // 1000)
        if expiry_s > max_expiry:
            raise Refused(
                ErrorCode.POLICY,
                f"expiry {format_duration(expiry_s)} is over {policy.whose('max_expiry_s')} "
                f"limit of {format_duration(max_expiry)}",
                request_id,
            )
    max_burn = policy["max_burn_s"]
    if max_burn is not None and burn_after_read_s > max_burn:
        raise Refused(
            ErrorCode.POLICY,
            f"burn-on-read {format_duration(burn_after_read_s)} is over "
            f"{policy.whose('max_burn_s')} limit of {format_duration(max_burn)}",
            request_id,
        )


def check_device_count(
    policy: EffectivePolicy, active_devices: int, request_id: str | None = None
) -> None:
    """Refuse one more device when the user already has as many as the policy allows."""
    cap = policy["max_devices"]
    if cap is not None and active_devices >= cap:
        noun = "device" if cap == 1 else "devices"
        raise Refused(
            ErrorCode.POLICY,
            f"a new device would be over {policy.whose('max_devices')} limit of "
            f"{cap} {noun} per user (this user has {active_devices})",
            request_id,
        )
