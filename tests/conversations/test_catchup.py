"""Catching up: a paged sync resumes where its last page stopped (logic/sync_resume.py).

The routes run in this process against the stack's DynamoDB, with every
request the stores make counted, and the page sizes made small so that a few
hundred messages take many pages, split conversations and outgrow the
token's window.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.frames.requests import AckRequest, SyncRequest
from sotto_server.dal.conversations import Conversation, ConversationsStore, Member
from sotto_server.dal.directory import DirectoryStore
from sotto_server.logic import messaging, sync_resume
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER, Stores
from sotto_server.logic.errors import ErrorCode, Refused
from sotto_server.logic.principal import Principal
from sotto_server.logic.standing import in_good_standing
from sotto_server.logic.sync_resume import Entry, Resume
from tests.support.logs import creation
from tests.support.stack import SeededDevice, Socket, Stack, seed_device

READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


class Meter:
    """Counts the DynamoDB requests a client makes, by operation."""

    def __init__(self, client: Any) -> None:
        self.requests: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.requests[model.name] += 1

    @property
    def reads(self) -> int:
        return sum(n for op, n in self.requests.items() if op in READS)


def now_ms() -> int:
    return int(time.time() * 1000)


def stores_of(stack: Stack) -> tuple[Stores, Meter]:
    client = stack.client("dynamodb")
    meter = Meter(client)
    stores = Stores(
        DirectoryStore(client, stack.table("DirectoryTable")),
        ConversationsStore(client, stack.table("MessagesTable")),
    )
    return stores, meter


def room_of(stack: Stack, owner: SeededDevice, peer: SeededDevice) -> str:
    store = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
    cid = f"room-{secrets.token_hex(12)}"
    store.create(
        Conversation(cid, "room", owner.network_id, owner.user_id, now_ms(), 0, 1, 2),
        [Member(owner.user_id, "moderator", 0), Member(peer.user_id, "member", 0)],
        {f"{owner.user_id}/{owner.device_id}", f"{peer.user_id}/{peer.device_id}"},
        max_per_user=MAX_CONVERSATIONS_PER_USER,
        log=creation(cid, owner, peer),
    )
    return cid


def seed_messages(stack: Stack, cid: str, sender: SeededDevice, first: int, count: int) -> None:
    """Messages ``first`` .. ``first + count - 1`` of a conversation, written in batches
    (the fastest way to hundreds; ``append`` is one transaction each), then its counter."""
    client, table = stack.client("dynamodb"), stack.table("MessagesTable")
    now = now_ms()
    puts = [
        {
            "PutRequest": {
                "Item": {
                    "pk": {"S": f"CONV#{cid}"},
                    "sk": {"S": f"MSG#{seq:012d}"},
                    "envelope": {"B": f"{cid}/{seq}".encode()},
                    "sender_device": {"S": sender.device_id},
                    "message_id": {"S": secrets.token_hex(16)},
                    "server_time": {"N": str(now)},
                    "expires_at_ms": {"N": "0"},
                    "burn_s": {"N": "0"},
                }
            }
        }
        for seq in range(first, first + count)
    ]
    for start in range(0, len(puts), 25):
        client.batch_write_item(RequestItems={table: puts[start : start + 25]})
    client.update_item(
        TableName=table,
        Key={"pk": {"S": f"CONV#{cid}"}, "sk": {"S": "META"}},
        UpdateExpression="SET next_seq = :n",
        ExpressionAttributeValues={":n": {"N": str(first + count)}},
    )


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messaging, "SYNC_PAGE_MESSAGES", 40)
    monkeypatch.setattr(messaging, "SYNC_PAGE_CONVERSATIONS", 5)
    monkeypatch.setattr(sync_resume, "RESUME_WINDOW", 6)


class Reader:
    """A device that syncs page by page through the route, acking each page, as the SDK."""

    def __init__(self, stores: Stores, device: SeededDevice) -> None:
        self.stores = stores
        self.caller = Principal(device.device_id, device.user_id, device.network_id)
        self.received: list[tuple[str, int]] = []
        self.pages = 0

    def frame(self) -> Principal:
        """The caller as each frame's standing check reads it (one batched read), as
        the handlers do."""
        return in_good_standing(self.stores.directory, self.caller)

    def page(self, resume: str | None = None) -> Mapping[str, Any]:
        outcome = messaging.sync(
            self.stores, self.frame(), SyncRequest(action="sync", resume=resume), now_ms()
        )
        self.pages += 1
        parts = outcome.replies
        assert [p["part"] for p in parts] == list(range(len(parts)))
        self.received += [(m["conversation_id"], m["seq"]) for p in parts for m in p["messages"]]
        last = parts[-1]
        messaging.ack(
            self.stores, self.frame(), AckRequest(action="ack", cursors=last["through"]), now_ms()
        )
        return last

    def catch_up(self, between: Any = None) -> None:
        resume: str | None = None
        while True:
            last = self.page(resume)
            if not last["more"]:
                assert "resume" not in last
                return
            resume = last["resume"]
            if between is not None:
                between(self.pages)


def test_catch_up_delivers_everything_once_in_order_with_bounded_reads(stack, small_pages):
    sender, reader = seed_device(stack), seed_device(stack)
    sizes = [3, 41, 7, 80, 12, 1, 55, 9, 20, 33, 2, 64, 5, 17]  # 349 messages
    rooms = [room_of(stack, sender, reader) for _ in sizes]
    for cid, size in zip(rooms, sizes, strict=True):
        seed_messages(stack, cid, sender, 1, size)
    stores, meter = stores_of(stack)
    device = Reader(stores, reader)
    device.catch_up()

    expected = {
        (cid, seq) for cid, size in zip(rooms, sizes, strict=True) for seq in range(1, size + 1)
    }
    assert len(device.received) == len(expected)  # exactly once
    assert set(device.received) == expected
    for cid in rooms:
        seqs = [seq for c, seq in device.received if c == cid]
        assert seqs == sorted(seqs)
    # 349 messages in pages of 40: ten pages at the least.
    assert 10 <= device.pages <= 14
    # Each page is two frames (sync, ack), each with its standing read; the ack reads
    # the user's conversations and the cursors it moves. What sync itself reads: one
    # query per conversation, one more each time a page stopped inside one, one
    # membership read per resumed page, and a plan (cursors, conversations, heads, mail)
    # on the first page and each time the window of 6 ran out (14 rooms: 3 plans at most).
    sync_reads = meter.reads - 4 * device.pages
    assert sync_reads <= len(rooms) + 2 * (device.pages - 1) + 4 * 3
    # Heads are read by plans only, not on every page: standing, ack cursors, plans, and
    # one membership read per resumed page.
    batched = meter.requests["BatchGetItem"] - 3 * device.pages
    assert batched <= 3 + device.pages - 1

    # Without the token every page plans again: the same catch-up costs more reads.
    other = seed_device(stack)
    rooms = [room_of(stack, sender, other) for _ in sizes]
    for cid, size in zip(rooms, sizes, strict=True):
        seed_messages(stack, cid, sender, 1, size)
    stores, control = stores_of(stack)
    replanning = Reader(stores, other)
    while replanning.page()["more"]:
        pass
    assert len(replanning.received) == len(expected)
    assert control.reads > meter.reads


def test_messages_arriving_while_paging_reach_the_device(stack, small_pages):
    """Stored after the plan read the heads: not served by the resume (it stops at the
    heads it planned, with their roster versions), so the next sync brings them, once."""
    sender, reader = seed_device(stack), seed_device(stack)
    sizes = [30, 30, 30, 30]
    rooms = [room_of(stack, sender, reader) for _ in sizes]
    for cid, size in zip(rooms, sizes, strict=True):
        seed_messages(stack, cid, sender, 1, size)
    stores, _meter = stores_of(stack)
    device = Reader(stores, reader)

    def arrive(page: int) -> None:
        if page == 1:
            # One room the first page read whole, one it stopped inside, one it never reached.
            for cid in rooms:
                seed_messages(stack, cid, sender, 31, 2)

    device.catch_up(between=arrive)
    assert len(device.received) == 120
    device.catch_up()
    expected = {(cid, seq) for cid in rooms for seq in range(1, 33)}
    assert len(device.received) == len(expected)
    assert set(device.received) == expected
    for cid in rooms:
        seqs = [seq for c, seq in device.received if c == cid]
        assert seqs == sorted(seqs)


def test_a_forged_token_reads_nothing_the_device_may_not(stack, small_pages):
    """The token is not trusted: a conversation the user is not in is skipped, one it
    joined late is read only from where it joined, and a token of another device is
    refused."""
    sender, reader, outsider = seed_device(stack), seed_device(stack), seed_device(stack)
    theirs = room_of(stack, sender, outsider)
    mine = room_of(stack, sender, reader)
    seed_messages(stack, theirs, sender, 1, 10)
    seed_messages(stack, mine, sender, 1, 10)
    client, table = stack.client("dynamodb"), stack.table("MessagesTable")
    # The reader joined at seq 6 (as add_members records it).
    client.update_item(
        TableName=table,
        Key={"pk": {"S": f"CONV#{mine}"}, "sk": {"S": f"MEMBER#{reader.user_id}"}},
        UpdateExpression="SET joined_seq = :j",
        ExpressionAttributeValues={":j": {"N": "6"}},
    )
    stores, _meter = stores_of(stack)
    device = Reader(stores, reader)
    forged = Resume(False, (Entry(theirs, 0, 10, 1), Entry(mine, 0, 10, 1)), False)
    last = device.page(sync_resume.encode(forged, reader.device_id, now_ms()))
    assert device.received == [(mine, seq) for seq in range(7, 11)]
    assert last["through"] == {mine: 10}
    assert last["more"] is False

    # A head promising more than there is fills the page's budget on paper: the page
    # stops where its membership read stopped, and the next page checks the rest.
    forged = Resume(False, (Entry(mine, 0, 40, 1), Entry(theirs, 0, 10, 1)), False)
    device.received.clear()
    last = device.page(sync_resume.encode(forged, reader.device_id, now_ms()))
    assert device.received == [(mine, seq) for seq in range(7, 11)]
    assert last["more"] is True
    last = device.page(last["resume"])
    assert device.received == [(mine, seq) for seq in range(7, 11)]
    assert last["through"] == {}
    assert last["more"] is False

    # The same token presented by the device it names is fine; by any other, refused.
    token = sync_resume.encode(forged, outsider.device_id, now_ms())
    with pytest.raises(Refused) as refused:
        device.page(token)
    assert refused.value.code == ErrorCode.BAD_REQUEST
    assert "another device" in refused.value.message


def test_a_member_removed_while_paging_reads_no_further(stack, small_pages):
    sender, reader = seed_device(stack), seed_device(stack)
    rooms = [room_of(stack, sender, reader) for _ in range(3)]
    for cid in rooms:
        seed_messages(stack, cid, sender, 1, 30)
    stores, _meter = stores_of(stack)
    device = Reader(stores, reader)
    first = device.page()
    assert first["more"] is True
    read = {cid for cid, _seq in device.received}
    unread = [cid for cid in rooms if cid not in read or first["through"].get(cid, 0) < 30]
    gone = unread[-1]
    stack.client("dynamodb").delete_item(
        TableName=stack.table("MessagesTable"),
        Key={"pk": {"S": f"CONV#{gone}"}, "sk": {"S": f"MEMBER#{reader.user_id}"}},
    )
    before = [m for m in device.received if m[0] == gone]
    resume: str | None = first["resume"]
    while resume is not None:
        last = device.page(resume)
        resume = last.get("resume")
    assert [m for m in device.received if m[0] == gone] == before


def test_an_expired_token_plans_again(stack, small_pages, monkeypatch):
    sender, reader = seed_device(stack), seed_device(stack)
    cid = room_of(stack, sender, reader)
    seed_messages(stack, cid, sender, 1, 50)
    stores, _meter = stores_of(stack)
    device = Reader(stores, reader)
    first = device.page()
    assert first["through"] == {cid: 40}
    stale = json.loads(base64.urlsafe_b64decode(first["resume"] + "=="))
    stale["t"] -= sync_resume.RESUME_TTL_MS + 1
    token = base64.urlsafe_b64encode(json.dumps(stale).encode()).decode()
    last = device.page(token)  # from the acknowledged cursor: nothing skipped, nothing twice
    assert last["through"] == {cid: 50}
    assert device.received == [(cid, seq) for seq in range(1, 51)]


# -- the token itself --------------------------------------------------------------------


def test_a_token_round_trips():
    resume = Resume(True, (Entry("room-a", 3, 9, 2), Entry("dm-b", 0, 1, 1)), True)
    token = sync_resume.encode(resume, "dev-1", 1_000_000)
    assert sync_resume.decode(token, "dev-1", 1_000_001, "r1") == Resume(
        True, resume.entries, True, 1_000_000
    )


@pytest.mark.parametrize(
    "body",
    [
        "not base64 at all!",
        "e30",  # {}
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'{"v":1,"d":"dev-1","t":5,"m":0,"r":false,"c":[]}').decode(),
        base64.urlsafe_b64encode(
            b'{"v":1,"d":"dev-1","t":5,"m":false,"r":false,"c":[["bad id!",0,1,1]]}'
        ).decode(),
        base64.urlsafe_b64encode(
            b'{"v":1,"d":"dev-1","t":5,"m":false,"r":false,"c":[["a",5,5,1]]}'
        ).decode(),
        base64.urlsafe_b64encode(
            b'{"v":1,"d":"dev-1","t":5,"m":false,"r":false,"c":[["a",0,1,1],["a",1,2,1]]}'
        ).decode(),
        base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()[:16_000],
        "A" * (sync_resume.MAX_TOKEN_CHARS + 1),
    ],
)
def test_a_tampered_token_is_a_bad_request(body):
    with pytest.raises(Refused) as refused:
        sync_resume.decode(body, "dev-1", 10, "r1")
    assert refused.value.code == ErrorCode.BAD_REQUEST
    assert "sync again without it" in refused.value.message


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=400),
        st.binary(max_size=400).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from("vdtmrc"), inner, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode()),
    )
)
def test_any_token_parses_or_is_refused(token):
    try:
        sync_resume.decode(token, "dev-1", 10**12, "r1")
    except Refused as refused:
        code = refused.code
    else:
        code = ErrorCode.BAD_REQUEST
    assert code == ErrorCode.BAD_REQUEST


def test_the_route_refuses_a_bad_token_in_words(stack):
    reader, other = seed_device(stack), seed_device(stack)
    with Socket(stack, reader) as socket:
        answer = socket.request("sync", resume="garbage")
        assert answer["action"] == "error"
        assert answer["code"] == "bad_request"
        assert "resume token" in answer["message"]
        foreign = sync_resume.encode(Resume(False, (), False), other.device_id, now_ms())
        answer = socket.request("sync", resume=foreign)
        assert answer["code"] == "bad_request"
        assert "another device" in answer["message"]
        # The socket still serves the device.
        (part,) = socket.answers("sync")
        assert part["more"] is False
