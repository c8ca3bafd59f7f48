"""The admin API: networks, users, and suspensions and revocations that take effect at once."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.stack import Socket, admin, http, seed_device


def test_network_is_created_and_listed(stack):
    created = admin(stack, "POST", "/networks", {"name": "Field Office"})
    listed = admin(stack, "GET", "/networks")["networks"]
    assert created in listed
    assert any(n["name"] == "Local" for n in listed)


def test_users_of_a_network_are_listed(stack):
    network = admin(stack, "POST", "/networks", {"name": "Listing"})
    device = seed_device(stack, network_id=network["network_id"])
    users = admin(stack, "GET", f"/networks/{network['network_id']}/users")["users"]
    assert [u["user_id"] for u in users] == [device.user_id]
    assert users[0]["status"] == "active"


def refused_status(stack, device) -> int:
    try:
        with connect(stack.websocket, additional_headers=device.headers(stack.audience)):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_suspending_a_user_closes_sockets_and_refuses_connects_until_reinstated(stack):
    device = seed_device(stack)
    with Socket(stack, device) as socket:
        suspended = admin(stack, "POST", f"/users/{device.user_id}/suspend")
        assert suspended["status"] == "suspended"
        with pytest.raises(ConnectionClosed):
            socket.request("ping")
    assert refused_status(stack, device) == 403
    admin(stack, "POST", f"/users/{device.user_id}/reinstate")
    assert refused_status(stack, device) == 101


def test_revoking_a_device_closes_its_sockets_and_refuses_connects(stack):
    device = seed_device(stack)
    with Socket(stack, device) as socket:
        revoked = admin(stack, "POST", f"/devices/{device.device_id}/revoke")
        assert revoked["status"] == "revoked"
        with pytest.raises(ConnectionClosed):
            socket.request("ping")
    assert refused_status(stack, device) == 403
    listed = admin(stack, "GET", f"/users/{device.user_id}")["devices"]
    assert listed == [{"device_id": device.device_id, "status": "revoked"}]


def test_admin_answers_404_for_unknown_user_and_device(stack):
    assert http(stack, "GET", "/v1/admin/users/usr-nope", signed=True)[0] == 404
    assert http(stack, "POST", "/v1/admin/devices/dev-nope/revoke", signed=True)[0] == 404
    assert http(stack, "POST", "/v1/admin/users/usr-nope/suspend", signed=True)[0] == 404
