"""Server races a soak found (issue 14, item 12), made to happen every time.

The route logic runs in this process against the local stack's tables, with
the other side of each race run at exactly the wrong moment:

* a message stored while members are being added is never served to them
  (their ``joined_seq`` is after it);
* a send whose chain was checked before an add committed is not stored after
  it (``stale_devices``): every member in the roster at store time has the key;
* ``distribute`` pushes the mail before it answers, so the sender's next send
  cannot overtake its key on the way to the other devices.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sotto.client.encoding import b64e
from sotto.client.events import Event, MessageEvent
from sotto.frames.requests import AddMembersRequest, SendRequest
from sotto.protocol.content import Text
from sotto.protocol.membership import Add
from sotto_server.dal.conversations import ConversationsStore, StoredMessage
from sotto_server.dal.directory import DirectoryStore
from sotto_server.events import MessageEvent as FrameEvent
from sotto_server.events import parse
from sotto_server.handlers import _routes
from sotto_server.handlers import messages as message_handler
from sotto_server.logic import conversations as conversation_logic
from sotto_server.logic import messaging as messaging_logic
from sotto_server.logic.conversations import Stores
from sotto_server.logic.errors import ErrorCode, Refused
from sotto_server.logic.principal import Principal
from sotto_server.logic.requests import parse_frame
from tests.support.people import Seeded, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Races"})["network_id"])


def principal(person: Seeded) -> Principal:
    device = person.devices[0]
    return Principal(device.device_id, device.user_id, device.network_id)


def stores(stack: Stack, conversations: ConversationsStore | None = None) -> Stores:
    client = stack.client("dynamodb")
    return Stores(
        directory=DirectoryStore(client, stack.table("DirectoryTable")),
        conversations=conversations or ConversationsStore(client, stack.table("MessagesTable")),
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def pending(messenger: Any, cid: str) -> list[Any]:
    record = messenger.state.conversations.get(cid)
    return [] if record is None else list(record.pending)


def frame(action: str, **fields: Any) -> str:
    return json.dumps({"action": action, "id": "r1", **fields})


def add_frame(stack: Stack, home: Path, moderator: Seeded, cid: str, user_id: str) -> str:
    """The add_members frame the moderator's client would send (signed after the head)."""
    with messenger_for(stack, home, moderator.devices[0]) as messenger:
        state = messenger.refresh(cid).membership
        assert state is not None
        entries = messenger._entries(messenger._user_identities([user_id]))
        op = messenger._sign(state, Add(tuple(entries)))
    return frame("add_members", conversation_id=cid, op=b64e(op))


def test_a_message_stored_while_members_are_added_is_not_served_to_them(
    stack, network, tmp_path: Path
):
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        cid = a1.create_room("race", [bob.user_id])
        a1.send_text(cid, "before")
    request = parse_frame(AddMembersRequest, add_frame(stack, tmp_path, alice, cid, carol.user_id))
    landed: list[int] = []

    class MessageLandsFirst(ConversationsStore):
        """The add read the conversation; a message is stored before the add commits."""

        def add_members(self, conversation: Any, *args: Any, **kwargs: Any) -> None:
            if not landed:
                with messenger_for(stack, tmp_path, bob.devices[0]) as b1:
                    landed.append(b1.send_text(cid, "while carol is being added").seq)
            super().add_members(conversation, *args, **kwargs)

    racing = MessageLandsFirst(stack.client("dynamodb"), stack.table("MessagesTable"))
    conversation_logic.add_members(stores(stack, racing), principal(alice), request, now_ms())

    member = racing.member(cid, carol.user_id)
    assert member is not None
    assert member.joined_seq == landed[0]
    with messenger_for(stack, tmp_path, carol.devices[0]) as c1:
        assert texts(c1.sync()) == []
        assert pending(c1, cid) == []  # nothing she cannot open
    with messenger_for(stack, tmp_path, bob.devices[0]) as b1:
        b1.sync()
        after = b1.send_text(cid, "after carol joined")
    with messenger_for(stack, tmp_path, carol.devices[0]) as c1:
        assert texts(c1.sync()) == ["after carol joined"]
        assert after.seq == landed[0] + 1
        assert pending(c1, cid) == []


def test_a_send_checked_before_an_add_commits_is_refused_not_stored(stack, network, tmp_path: Path):
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        cid = a1.create_room("race", [bob.user_id])
        a1.send_text(cid, "before")
        # Prepared for alice and bob, its chain distributed: the server's check will pass.
        item = a1._prepare(cid, Text("checked before carol"), timers=None, to_user=None)
        a1.save()
        for start in range(0, len(item.distributions), 40):
            a1._call(
                "distribute",
                conversation_id=cid,
                chain_id=b64e(item.chain_id),
                distributions=[b64e(d) for d in item.distributions[start : start + 40]],
            )
    added: list[bool] = []

    class AddLandsFirst(ConversationsStore):
        """The send's chain was checked against the roster; carol is added before it stores."""

        def append(self, conversation: Any, message: StoredMessage, **kwargs: Any) -> Any:
            if not added:
                with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
                    a1.add_members(cid, [carol.user_id])
                added.append(True)
            return super().append(conversation, message, **kwargs)

    racing = AddLandsFirst(stack.client("dynamodb"), stack.table("MessagesTable"))
    request = parse_frame(
        SendRequest, frame("send", conversation_id=cid, envelope=b64e(item.envelope))
    )
    with pytest.raises(Refused) as refused:
        messaging_logic.send(stores(stack, racing), principal(alice), request, now_ms())
    assert refused.value.code == ErrorCode.STALE_DEVICES
    assert refused.value.details is not None
    assert refused.value.details["missing"] == [carol.devices[0].device_id]
    assert racing.message_by_id(cid, item.message_id) is None

    # The client repairs it as any stale send: prepared again for carol too, and read.
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        a1.sync()
        assert a1.state.outbox == []
    with messenger_for(stack, tmp_path, carol.devices[0]) as c1:
        assert texts(c1.sync()) == ["checked before carol"]
        assert pending(c1, cid) == []


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What run_route writes to sockets, in order: (connection, frame)."""
    written: list[tuple[str, dict[str, Any]]] = []

    def reply(connection_id: str, data: bytes) -> str:
        written.append((connection_id, json.loads(data)))
        return "delivered"

    monkeypatch.setattr(_routes, "reply", reply)
    monkeypatch.setattr(
        _routes, "online_pushes", lambda notices: [(f"to-{d}", f) for d, f in notices]
    )
    return written


def test_distribute_pushes_the_mail_before_it_answers(
    stack, network, tmp_path: Path, wire, monkeypatch
):
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as a1:
        cid = a1.create_room("keys", [bob.user_id])
        item = a1._prepare(cid, Text("needs its key"), timers=None, to_user=None)
        a1.save()
    assert item.distributions
    caller = principal(alice)
    monkeypatch.setattr(_routes, "standing_caller", lambda event: caller)
    event = json.loads(Path("tests/events/ws_message_ping.json").read_text())
    event["requestContext"]["routeKey"] = "distribute"
    event["requestContext"]["connectionId"] = "the-sender"
    event["body"] = frame(
        "distribute",
        conversation_id=cid,
        chain_id=b64e(item.chain_id),
        distributions=[b64e(d) for d in item.distributions],
    )
    _routes.run_route(
        parse(event=event, model=FrameEvent),
        message_handler.routes(),
        lambda: stores(stack),
        message_handler.logger,
        message_handler.metrics,
    )
    order = [(connection, body["action"]) for connection, body in wire]
    assert order == [(f"to-{bob.devices[0].device_id}", "mail"), ("the-sender", "distributed")]
