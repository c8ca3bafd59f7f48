"""Revocation and suspension hold at once, on every socket and every route, at the defaults.

A thief's device may hold several sockets, keep opening new ones while the
administrator revokes it, and belong to hundreds of rooms: the admin call
stays short, no socket of the device answers anything once it returned, no
new socket opens, and the roster work follows through the directory stream.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sotto_server.dal.conversations import Conversation, ConversationsStore, Member
from sotto_server.dal.directory import Conflict, DirectoryStore
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER
from tests.support.logs import creation
from tests.support.stack import SeededDevice, Socket, Stack, admin, seed_device

ROOMS = 500


def conversations_store(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def seed_rooms(stack: Stack, owner: SeededDevice, peer: SeededDevice, count: int) -> list[str]:
    """``count`` rooms of two, written through the storage layer (the fastest way to 500)."""
    store = conversations_store(stack)
    now = int(time.time() * 1000)
    rooms = []
    for index in range(count):
        cid = f"room-{owner.device_id[4:]}{index:012x}"
        store.create(
            Conversation(cid, "room", owner.network_id, owner.user_id, now, 0, 1, 2),
            [Member(owner.user_id, "moderator", 0), Member(peer.user_id, "member", 0)],
            {f"{owner.user_id}/{owner.device_id}", f"{peer.user_id}/{peer.device_id}"},
            max_per_user=MAX_CONVERSATIONS_PER_USER,
            log=creation(cid, owner, peer),
        )
        rooms.append(cid)
    return rooms


def request(ws: ClientConnection, action: str, timeout: float = 10) -> dict[str, Any] | str:
    """Send one frame; its answer, or "closed" when the socket is gone first."""
    frame_id = f"r{time.monotonic_ns()}"
    try:
        ws.send(json.dumps({"action": action, "id": frame_id}))
        while True:
            answer = json.loads(ws.recv(timeout=timeout))
            if answer.get("id") == frame_id:
                return dict(answer)
    except ConnectionClosed:
        return "closed"


def answered(outcome: dict[str, Any] | str) -> bool:
    """Whether the server did what was asked (anything but a refusal or a closed socket)."""
    return isinstance(outcome, dict) and outcome.get("action") != "error"


class Opener(threading.Thread):
    """Keeps opening sockets for a device and asking them something, until stopped."""

    def __init__(self, stack: Stack, device: SeededDevice, action: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.device, self.action = stack, device, action
        self.stopping = threading.Event()
        self.got_in = threading.Event()  # one of its sockets was answered
        self.results: list[tuple[float, Any]] = []  # (time the frame was sent, outcome)
        self.open: list[ClientConnection] = []
        self.sockets = ExitStack()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                ws = self.sockets.enter_context(
                    connect(
                        self.stack.websocket,
                        additional_headers=self.device.headers(self.stack.audience),
                        open_timeout=10,
                    )
                )
            except InvalidStatus as refused:
                self.results.append((time.monotonic(), refused.response.status_code))
                continue
            sent = time.monotonic()
            outcome = request(ws, self.action)
            self.results.append((sent, outcome))
            if answered(outcome):
                self.got_in.set()
            self.open.append(ws)  # kept: the server must close it


def assert_cut_off(
    stack: Stack, sockets: list[ClientConnection], opener: Opener, returned_at: float
) -> None:
    # No frame sent after the admin call returned was answered, on any socket.
    late = [outcome for sent, outcome in opener.results if sent >= returned_at]
    assert late, "the opener made no attempt after the revocation"
    assert not [o for o in late if o not in (403, "closed") and answered(o)], late
    for ws in sockets:
        outcome = request(ws, "list_conversations", timeout=2)
        assert not answered(outcome), outcome
    # Within 2 s every socket the device ever opened is closed by the server.
    deadline = returned_at + 2.0
    for ws in [*sockets, *opener.open]:
        try:
            while True:
                ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed:
            continue
        except TimeoutError:
            pytest.fail("a socket of the device was still open 2 s after the call returned")


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


def test_revocation_cuts_a_device_off_at_once_while_it_races_in_500_rooms(default_stack):
    stack = default_stack
    network = admin(stack, "POST", "/networks", {"name": "Revocation"})["network_id"]
    thief, peer = seed_device(stack, network_id=network), seed_device(stack, network_id=network)
    rooms = seed_rooms(stack, thief, peer, ROOMS)
    entry = f"{thief.user_id}/{thief.device_id}"
    store = conversations_store(stack)
    with ExitStack() as stack_of_sockets:
        sockets = [
            stack_of_sockets.enter_context(
                connect(stack.websocket, additional_headers=thief.headers(stack.audience))
            )
            for _ in range(3)
        ]
        assert all(answered(request(ws, "list_conversations")) for ws in sockets)
        opener = Opener(stack, thief, "link_create")
        opener.start()
        assert opener.got_in.wait(30), "the opener never got in before the revocation"
        started = time.monotonic()
        revoked = admin(stack, "POST", f"/devices/{thief.device_id}/revoke")
        returned_at = time.monotonic()
        time.sleep(1.0)
        opener.stopping.set()
        opener.join(timeout=30)
        assert revoked["status"] == "revoked"
        # The admin function's timeout is 10 s; the call does not walk rosters.
        assert returned_at - started < 2.0
        assert_cut_off(stack, sockets, opener, returned_at)
    # The roster work follows through the stream, off the admin request.
    took = wait_for(
        lambda: all(entry not in store.roster(cid) for cid in rooms), 120, "roster removal"
    )
    print(f"removed from {ROOMS} rosters {took:.1f} s after the admin call returned")
    assert all(store.get(cid).roster_version == 2 for cid in rooms)  # type: ignore[union-attr]
    opener.sockets.close()
    assert store.roster(rooms[0]) == {f"{peer.user_id}/{peer.device_id}"}


def test_suspension_cuts_off_every_device_of_the_user(default_stack):
    stack = default_stack
    network = admin(stack, "POST", "/networks", {"name": "Suspension"})["network_id"]
    user = seed_device(stack, network_id=network)
    with Socket(stack, user) as socket:
        assert socket.request("ping")["action"] == "pong"
        with ExitStack() as closing:
            sockets = [
                closing.enter_context(
                    connect(stack.websocket, additional_headers=user.headers(stack.audience))
                )
                for _ in range(2)
            ]
            opener = Opener(stack, user, "sync")
            opener.start()
            assert opener.got_in.wait(30), "the opener never got in before the suspension"
            admin(stack, "POST", f"/users/{user.user_id}/suspend")
            returned_at = time.monotonic()
            time.sleep(1.0)
            opener.stopping.set()
            opener.join(timeout=30)
            assert_cut_off(stack, sockets, opener, returned_at)
            opener.sockets.close()
    admin(stack, "POST", f"/users/{user.user_id}/reinstate")
    with Socket(stack, user) as socket:
        assert socket.request("ping")["action"] == "pong"


def test_a_frame_from_a_revoked_device_is_refused_by_name_then_the_socket_closes(default_stack):
    """A frame never reaches a route: it is refused by name (or finds the socket closed)."""
    stack = default_stack
    device = seed_device(stack)
    directory = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    record = directory.get_device(device.device_id)
    assert record is not None
    with Socket(stack, device) as socket:
        # Straight into the table: no admin call, so no socket is closed for us.
        directory.revoke_device(record, int(time.time() * 1000))
        try:
            answer = socket.request("list_conversations")
        except ConnectionClosed:
            pass  # the stream's second sweep closed it first
        else:
            assert answer["code"] == "revoked"
            assert answer["message"] == "this device has been revoked"
        with pytest.raises(ConnectionClosed):
            socket.request("ping")


def test_link_approval_commits_only_while_the_approver_is_active(default_stack):
    """The approval's own transaction checks the approver: a revocation in flight wins."""
    stack = default_stack
    approver = seed_device(stack)
    directory = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    record = directory.get_device(approver.device_id)
    assert record is not None
    directory.revoke_device(record, int(time.time() * 1000))
    link = directory.get_link("lnk-none")
    assert link is None
    from sotto_server.dal.directory import DeviceRecord, LinkRecord

    now = int(time.time() * 1000)
    link = LinkRecord(
        "lnk-racing",
        "hash",
        approver.network_id,
        approver.user_id,
        approver.device_id,
        now,
        now + 600_000,
        "requested",
        device_id="dev-new-racing",
        device_key=b"k",
    )
    new = DeviceRecord("dev-new-racing", approver.user_id, approver.network_id, b"k", "active", now)
    with pytest.raises(Conflict) as lost:
        directory.approve_link(link, new, approver.device_id, now)
    assert lost.value.reason == "approver_not_active"
    assert directory.get_device("dev-new-racing") is None
