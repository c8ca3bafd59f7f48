"""The admin API: networks, invites, users and devices.

IAM has already authorized the caller (SigV4 on every admin route). Suspending
a user or revoking a device commits the status, then closes their open
sockets at once, so the change takes effect now rather than at the next
reconnect; every later frame is refused by its standing check. What takes
longer (a revoked device leaving every roster of its user) follows through
the directory stream, so this request stays short whatever the user owns.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from sotto.frames.requests import CreateNetworkRequest, InviteRequest

from ..dal.connections import ConnectionsStore
from ..dal.directory import (
    DeviceRecord,
    DirectoryStore,
    Network,
    UserRecord,
    UserStatus,
)
from .errors import ErrorCode, Refused
from .frames import b64
from .invites import new_invite
from .standing import close_device_sockets

if TYPE_CHECKING:
    from sotto.frames.answers_admin import (
        AdminDeviceAnswer,
        AdminUserAnswer,
        InviteAnswer,
        NetworkAnswer,
        NetworksAnswer,
        UserDeviceItem,
        UserItem,
        UsersAnswer,
    )

__all__ = [
    "create_invite",
    "create_network",
    "get_device",
    "get_user",
    "list_networks",
    "list_users",
    "revoke_device",
    "set_user_status",
]

Disconnect = Callable[[str], None]


def _network(network: Network) -> NetworkAnswer:
    return {
        "network_id": network.network_id,
        "name": network.name,
        "created_at": network.created_at,
    }


def create_network(
    directory: DirectoryStore, request: CreateNetworkRequest, now_ms: int
) -> NetworkAnswer:
    network = Network(f"net-{secrets.token_hex(6)}", request.name, now_ms)
    directory.create_network(network)
    return _network(network)


def list_networks(directory: DirectoryStore) -> NetworksAnswer:
    return {"networks": [_network(n) for n in directory.list_networks()]}


def create_invite(
    directory: DirectoryStore, network_id: str, request: InviteRequest, now_ms: int
) -> InviteAnswer:
    return new_invite(directory, network_id, request, now_ms)


def list_users(directory: DirectoryStore, network_id: str) -> UsersAnswer:
    if directory.get_network(network_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such network")
    users: list[UserItem] = [
        {"user_id": user_id, "handle": handle, "status": status}
        for user_id, handle, status in directory.list_users(network_id)
    ]
    return {"network_id": network_id, "users": users}


def _user(directory: DirectoryStore, user: UserRecord) -> AdminUserAnswer:
    devices: list[UserDeviceItem] = [
        {"device_id": device_id, "status": status}
        for device_id, _certificate, status in directory.list_devices(user.user_id)
    ]
    return {
        "user_id": user.user_id,
        "network_id": user.network_id,
        "handle": user.handle,
        "status": user.status,
        "created_at": user.created_at,
        "identity_key": b64(user.identity_key),
        "devices": devices,
    }


def _existing_user(directory: DirectoryStore, user_id: str) -> UserRecord:
    user = directory.get_user(user_id)
    if user is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such user")
    return user


def get_user(directory: DirectoryStore, user_id: str) -> AdminUserAnswer:
    return _user(directory, _existing_user(directory, user_id))


def set_user_status(
    directory: DirectoryStore,
    connections: ConnectionsStore,
    disconnect: Disconnect,
    user_id: str,
    status: UserStatus,
) -> AdminUserAnswer:
    user = _existing_user(directory, user_id)
    directory.set_user_status(user, status)
    if status == "suspended":
        for device_id, _certificate, _status in directory.list_devices(user_id):
            close_device_sockets(connections, disconnect, device_id)
    return _user(directory, replace(user, status=status))


def _device(device: DeviceRecord) -> AdminDeviceAnswer:
    return {
        "device_id": device.device_id,
        "user_id": device.user_id,
        "network_id": device.network_id,
        "status": device.status,
        "created_at": device.created_at,
        "signing_key": b64(device.signing_key),
        "certificate": b64(device.certificate),
    }


def _existing_device(directory: DirectoryStore, device_id: str) -> DeviceRecord:
    device = directory.get_device(device_id)
    if device is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such device")
    return device


def get_device(directory: DirectoryStore, device_id: str) -> AdminDeviceAnswer:
    return _device(_existing_device(directory, device_id))


def revoke_device(
    directory: DirectoryStore,
    connections: ConnectionsStore,
    disconnect: Disconnect,
    device_id: str,
    now_ms: int,
) -> AdminDeviceAnswer:
    device = _existing_device(directory, device_id)
    # Also on a repeated revoke: the write moves revoked_at, so the stream
    # runs the roster work again and repairs whatever a failure left.
    directory.revoke_device(device, now_ms)
    close_device_sockets(connections, disconnect, device_id)
    return _device(replace(device, status="revoked"))
