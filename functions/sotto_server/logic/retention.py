"""Retention identities: enable, disable, rotate, and whether a network retains.

Retention is on for a network exactly when its retention identity is
enabled (``retention_for``); the network policy (issue 13) shows it from
here. The admin's machine makes the keys and wraps them with KMS; this
server checks that what it is given chains to the network's records officer
and stores it. It never sees a private key in the clear and cannot unwrap
one (no function role may decrypt with the archive key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sotto.frames.requests import (
    RetentionEnableRequest,
    RetentionIdentityRequest,
    RetentionRotateRequest,
)
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import RetentionIdentity

from ..dal.retention import Conflict, Retention, RetentionGeneration, RetentionStore
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome
from .principal import Principal

if TYPE_CHECKING:
    from sotto.frames.answers_admin import RetentionAdminAnswer, RetentionOffAnswer
    from sotto.frames.answers_devices import RetentionAnswer, RetentionFields

__all__ = [
    "disable",
    "enable",
    "identity_frame",
    "retention_for",
    "retention_identity",
    "retention_of",
    "rotate",
    "show",
]


def retention_for(store: RetentionStore, network_id: str) -> Retention | None:
    """The network's retention identity when retention is on; None when it is off."""
    retention = store.get(network_id)
    return retention if retention is not None and retention.enabled else None


def _identity(
    network_id: str, officer: bytes, certificate: bytes, prekey: bytes, now_ms: int
) -> RetentionIdentity:
    try:
        identity = RetentionIdentity(
            network_id,
            IdentityPublicKey.parse(officer),
            DeviceCertificate.parse(certificate),
            PrekeyCertificate.parse(prekey),
        )
        identity.verify(now=now_ms)
    except ProtocolError as error:
        raise Refused(
            ErrorCode.BAD_REQUEST, f"retention identity does not verify ({error.code})"
        ) from None
    return identity


def _answer(store: RetentionStore, retention: Retention) -> RetentionAdminAnswer:
    return {
        "network_id": retention.network_id,
        "status": retention.status,
        "years": retention.years,
        "officer_identity": b64(retention.officer_identity),
        "wrapped_officer_key": b64(retention.wrapped_officer_key),
        "generation": retention.current.generation,
        "device_id": retention.current.device_id,
        "certificate": b64(retention.current.certificate),
        "prekey": b64(retention.current.prekey),
        "updated_at": retention.updated_at,
        "generations": [
            {
                "generation": g.generation,
                "device_id": g.device_id,
                "certificate": b64(g.certificate),
                "prekey": b64(g.prekey),
                "wrapped_device_key": b64(g.wrapped_device_key),
                "created_at": g.created_at,
            }
            for g in store.generations(retention.network_id)
        ],
    }


def show(store: RetentionStore, network_id: str) -> RetentionOffAnswer | RetentionAdminAnswer:
    retention = store.get(network_id)
    if retention is None:
        return {"network_id": network_id, "status": "off"}
    return _answer(store, retention)


def _written(store: RetentionStore, network_id: str) -> RetentionAdminAnswer:
    """The identity just written (enabled, disabled or rotated): never off, as nothing
    deletes one."""
    retention = store.get(network_id)
    if retention is None:
        raise Refused(ErrorCode.NOT_FOUND, "this network has no retention identity")
    return _answer(store, retention)


def enable(
    store: RetentionStore, network_id: str, request: RetentionEnableRequest, now_ms: int
) -> RetentionAdminAnswer:
    """Create the first generation, or turn a disabled identity back on (same keys)."""
    existing = store.get(network_id)
    if existing is not None:
        if request.certificate is not None:
            raise Refused(
                ErrorCode.CONFLICT, "this network has a retention identity; rotate it instead"
            )
        store.set_status(network_id, "enabled", now_ms)
        return _written(store, network_id)
    if (
        request.officer_identity is None
        or request.certificate is None
        or request.prekey is None
        or request.wrapped_device_key is None
        or request.wrapped_officer_key is None
    ):
        raise Refused(ErrorCode.BAD_REQUEST, "a first enable carries the new retention identity")
    identity = _identity(
        network_id, request.officer_identity, request.certificate, request.prekey, now_ms
    )
    retention = Retention(
        network_id=network_id,
        status="enabled",
        years=request.years,
        officer_identity=request.officer_identity,
        wrapped_officer_key=request.wrapped_officer_key,
        current=RetentionGeneration(
            1,
            identity.device_id,
            request.certificate,
            request.prekey,
            request.wrapped_device_key,
            now_ms,
        ),
        updated_at=now_ms,
    )
    try:
        store.create(retention)
    except Conflict as conflict:
        if conflict.reason == "no_such_network":
            raise Refused(ErrorCode.NOT_FOUND, "no such network") from None
        raise Refused(ErrorCode.CONFLICT, "retention was enabled meanwhile") from None
    return _written(store, network_id)


def disable(store: RetentionStore, network_id: str, now_ms: int) -> RetentionAdminAnswer:
    try:
        store.set_status(network_id, "disabled", now_ms)
    except Conflict:
        raise Refused(ErrorCode.NOT_FOUND, "this network has no retention identity") from None
    return _written(store, network_id)


def rotate(
    store: RetentionStore, network_id: str, request: RetentionRotateRequest, now_ms: int
) -> RetentionAdminAnswer:
    """A new key generation, certified by the same records officer."""
    existing = store.get(network_id)
    if existing is None:
        raise Refused(ErrorCode.NOT_FOUND, "this network has no retention identity")
    if request.previous_generation != existing.current.generation:
        raise Refused(ErrorCode.CONFLICT, "the retention key was rotated meanwhile")
    identity = _identity(
        network_id, existing.officer_identity, request.certificate, request.prekey, now_ms
    )
    if any(g.device_id == identity.device_id for g in store.generations(network_id)):
        raise Refused(ErrorCode.CONFLICT, "a retention generation already has this device id")
    current = RetentionGeneration(
        existing.current.generation + 1,
        identity.device_id,
        request.certificate,
        request.prekey,
        request.wrapped_device_key,
        now_ms,
    )
    rotated = Retention(
        network_id=network_id,
        status=existing.status,
        years=request.years if request.years is not None else existing.years,
        officer_identity=existing.officer_identity,
        wrapped_officer_key=existing.wrapped_officer_key,
        current=current,
        updated_at=now_ms,
    )
    try:
        store.rotate(rotated, existing.current.generation)
    except Conflict:
        raise Refused(ErrorCode.CONFLICT, "the retention key was rotated meanwhile") from None
    return _written(store, network_id)


def identity_frame(network_id: str, retention: Retention | None) -> RetentionFields:
    """What a client learns: the public retention identity, or that retention is off."""
    if retention is None:
        return {"network_id": network_id, "enabled": False}
    return {
        "network_id": network_id,
        "enabled": True,
        "years": retention.years,
        "officer_identity": b64(retention.officer_identity),
        "certificate": b64(retention.current.certificate),
        "prekey": b64(retention.current.prekey),
    }


class _HasRetention(Protocol):
    @property
    def retention(self) -> RetentionStore | None: ...


def retention_of(stores: _HasRetention, network_id: str) -> Retention | None:
    """``retention_for`` through a function's stores (None without a retention store)."""
    return None if stores.retention is None else retention_for(stores.retention, network_id)


def retention_identity(
    stores: _HasRetention, caller: Principal, request: RetentionIdentityRequest, now_ms: int
) -> Outcome:
    """The ``retention`` route: the caller's network's retention identity, or that it is off."""
    frame = identity_frame(caller.network_id, retention_of(stores, caller.network_id))
    answer: RetentionAnswer = {"action": "retention", "id": request.id, **frame}
    return Outcome(replies=[answer])
