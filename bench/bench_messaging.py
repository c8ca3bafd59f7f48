"""Messaging costs (issue 5 point 10): DynamoDB per message, fan-out rate, catch-up, $ per message.

The local stack runs in this process (``bench/_stack.py``) and a meter on
boto3's default session (``bench/_meter.py``) counts every DynamoDB and
@connections request the handlers make, by operation, table and index.

1. DynamoDB requests and capacity per message, in a 1:1 conversation and in
   rooms of 10, 100 and 1000 members (one device each): the steady-state
   send path apart from a chain rotation (distribution to every device).
2. Fan-out pushes per second to online devices next to the raw loopback
   @connections rate (boto3 ``post_to_connection`` to the same sockets, with
   the same 32 threads), measured in the same run.
3. The reads a device needs to catch up on missed messages spread across
   conversations (sync, following each page's ``resume``, + ack until ``more`` is
   false).
4. Cost per million messages at AWS list prices, derived from 1.

Scale with SOTTO_BENCH_ROOMS (member counts, "2,10,100,1000"),
SOTTO_BENCH_MESSAGES (steady-state sends per room), SOTTO_BENCH_FANOUT_DEVICES,
SOTTO_BENCH_FANOUT_MESSAGES, SOTTO_BENCH_CATCHUP ("conversations x messages").
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from botocore.config import Config

from sotto.frames.requests import MAX_DISTRIBUTIONS_PER_CALL, MAX_ROOM_ADD
from sotto.protocol.content import Text
from sotto.protocol.conversation import Conversation
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    MemberEntry,
    MembershipState,
    Role,
    direct_conversation_id,
    sign_operation,
    verify_log,
)
from sotto_server.dal import conversations as dal
from sotto_server.dal.connections import ConnectionsStore
from sotto_server.handlers._routes import FANOUT_WORKERS
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER, roster_entry
from sotto_server.logic.frames import b64

from ._cost import FANOUT_QUERY, Catchup, RoomCost, report_cost
from ._meter import Tally, item_size
from ._report import conversation_name, table
from ._stack import BenchStack, Device, Listeners, Socket, now_ms, payload_frame

ROOMS = tuple(int(n) for n in os.environ.get("SOTTO_BENCH_ROOMS", "2,10,100,1000").split(","))
STEADY_MESSAGES = int(os.environ.get("SOTTO_BENCH_MESSAGES", "3"))
FANOUT_DEVICES = int(os.environ.get("SOTTO_BENCH_FANOUT_DEVICES", "200"))
FANOUT_MESSAGES = int(os.environ.get("SOTTO_BENCH_FANOUT_MESSAGES", "5"))
CATCHUP = tuple(int(n) for n in os.environ.get("SOTTO_BENCH_CATCHUP", "100x100").split("x"))
TEXT = Text("a typical chat line, about a hundred characters long, the size most messages are.")
# create_conversation with the documented 49 others is a 102-item transaction,
# over DynamoDB's 100 (a server bug): create with 48, add the rest.
ROOM_CREATE = MAX_ROOM_ADD - 1

# -- a sending device --------------------------------------------------------------


class Sender:
    """The device under test: a real engine whose chain keys go to every member device."""

    def __init__(self, stack: BenchStack, device: Device) -> None:
        self.stack = stack
        self.device = device
        self.socket: Socket = stack.socket(device)
        self.local = device.local()
        self.prekeys: dict[str, dict[tuple[str, str], Any]] = {}
        self.engines: dict[str, Conversation] = {}
        self.last_envelope = b""
        self.pending = b""

    def open(self, others: Sequence[Device]) -> str:
        """A direct conversation with one other user, or a room built through the routes.

        Each membership change is an operation the sender signs after the log
        so far (docs/protocol.md §15), as the SDK does.
        """
        me = self.device
        mine = MemberEntry.of(me.user_id, me.identity.public, Role.MODERATOR)
        if len(others) == 1:
            cid = direct_conversation_id(me.user_id, others[0].user_id)
            kind, mine = ConversationKind.DIRECT, MemberEntry.of(me.user_id, me.identity.public)
            first: Sequence[Device] = others
        else:
            cid, kind = f"room-{secrets.token_hex(12)}", ConversationKind.ROOM
            first = others[:ROOM_CREATE]

        def entries(devices: Sequence[Device]) -> tuple[MemberEntry, ...]:
            listed = (MemberEntry.of(d.user_id, d.identity.public) for d in devices)
            return tuple(sorted(listed, key=lambda e: e.user_id))

        creation = sorted((mine, *entries(first)), key=lambda e: e.user_id)
        changes: list[Change] = [Create(kind, tuple(creation))]
        changes += [
            Add(entries(others[start : start + MAX_ROOM_ADD]))
            for start in range(len(first), len(others), MAX_ROOM_ADD)
        ]
        keys = list(
            {d.identity.public.serialize(): d.identity.public for d in (me, *others)}.values()
        )
        ops: list[bytes] = []
        state: MembershipState | None = None
        for change in changes:
            now = now_ms()
            op = sign_operation(
                me.secrets, me.identity.public, state, change, now=now, conversation_id=cid
            )
            ops.append(op)
            state = verify_log(ops, keys, conversation_id=cid, now=now)
            action = "add_members" if state.seq else "create_conversation"
            self.socket.request(action, conversation_id=cid, op=b64(op))
        self.prekeys[cid] = {d.address: d.prekey() for d in others}
        return cid

    def join(self, cid: str) -> None:
        members = self.socket.members(cid)
        self.engines[cid] = Conversation.create(cid, self.local, members, now=now_ms())

    def rotate(self, cid: str) -> tuple[int, int]:
        """Start a new chain and distribute it; returns (frames, bytes sent)."""
        self.engines[cid].request_rotation()
        outgoing = self.engines[cid].prepare_send(TEXT, now=now_ms(), prekeys=self.prekeys[cid])
        frames = sent = 0
        step = MAX_DISTRIBUTIONS_PER_CALL
        for start in range(0, len(outgoing.distributions), step):
            batch = [b64(d.data) for d in outgoing.distributions[start : start + step]]
            fields = {"conversation_id": cid, "chain_id": b64(outgoing.header.chain_id)}
            self.socket.request("distribute", **fields, distributions=batch)
            frames += 1
            sent += sum(len(b) for b in batch) + 200
        self.pending = outgoing.envelope
        return frames, sent

    def send(self, cid: str) -> dict[str, Any]:
        envelope = self.pending or self.engines[cid].prepare_send(TEXT, now=now_ms()).envelope
        self.pending = b""
        self.last_envelope = envelope
        (answer,) = self.socket.request("send", conversation_id=cid, envelope=b64(envelope))
        return answer


# -- 1. DynamoDB per message -----------------------------------------------------------


def measure_room(stack: BenchStack, sender: Sender, others: Sequence[Device]) -> RoomCost:
    cid = sender.open(others)
    stack.wait_idle()
    with stack.meter.window() as roster_read:
        sender.join(cid)
        stack.wait_idle()
    with stack.meter.window() as rotation:
        frames, frame_bytes = sender.rotate(cid)
        stack.wait_idle()
    calls, seconds = stack.functions.calls["messages"], stack.functions.seconds["messages"]
    with stack.meter.window() as steady:
        for _ in range(STEADY_MESSAGES):
            sender.send(cid)
            stack.wait_idle()
    handler_s = (stack.functions.seconds["messages"] - seconds) / (
        stack.functions.calls["messages"] - calls
    )
    return RoomCost(
        members=len(others) + 1,
        steady=steady,
        rotation=rotation,
        roster_read=roster_read,
        frames=frames,
        frame_bytes=frame_bytes,
        handler_ms=handler_s * 1000,
        envelope_bytes=len(sender.last_envelope),
        messages=STEADY_MESSAGES,
    )


def _verdict(costs: Sequence[RoomCost]) -> str:
    """The claim under test: writes per steady-state message do not grow with members."""
    writes = {(c.per(c.steady.write_requests), c.per(c.steady.wcu)) for c in costs}
    small, large = costs[0], costs[-1]
    if len(writes) == 1:
        flat = f"flat, {small.per(small.steady.write_requests):g} request /"
        flat += f" {small.per(small.steady.wcu):g} WCU at every size"
    else:
        flat = "NOT flat: " + ", ".join(f"{w:g} req/{u:g} WCU" for w, u in sorted(writes))
    span = f"{conversation_name(small.members)} -> {conversation_name(large.members)}"
    reads = (
        f"{small.per(small.steady.read_requests):g} -> {large.per(large.steady.read_requests):g}"
    )
    rcu = f"{small.per(small.steady.rcu):g} -> {large.per(large.steady.rcu):g}"
    grow = f"reads grow ({span}): {reads} requests, {rcu} RCU"
    return f"   writes per steady-state message: {flat}; {grow}"


def report_rooms(costs: Sequence[RoomCost]) -> None:
    kinds = sorted({k for c in costs for k in c.steady.requests if "Connections" not in k})
    kinds = [k for k in kinds if not k.startswith("PostToConnection")] + [FANOUT_QUERY]
    table(
        f"1. DynamoDB per steady-state message (send, no rotation; mean of {STEADY_MESSAGES}"
        " sends; RCU/WCU computed from item sizes by DynamoDB's rules; moto's own"
        " ConsumedCapacity is a per-request constant and omits UpdateItem/TransactWriteItems)",
        [
            "conversation",
            "devices",
            "requests",
            "reads",
            "writes",
            "RCU",
            "WCU",
            "moto units",
            "notices",
            "local ms",
        ],
        [
            (
                conversation_name(c.members),
                c.members,
                c.per(c.steady.dynamodb_requests),
                c.per(c.steady.read_requests),
                c.per(c.steady.write_requests),
                c.per(c.steady.rcu),
                c.per(c.steady.wcu),
                c.per(c.steady.moto_units),
                c.notices,
                c.handler_ms,
            )
            for c in costs
        ],
    )
    print(_verdict(costs))
    table(
        "   requests per message by operation and table",
        ["request", *(conversation_name(c.members) for c in costs)],
        [(k, *(c.per(c.steady.requests[k]) for c in costs)) for k in kinds],
    )
    table(
        "   chain rotation (distribute to every other device) and the roster read before it",
        [
            "conversation",
            "distributions",
            "frames",
            "requests",
            "writes",
            "RCU",
            "WCU",
            "roster read requests",
            "roster RCU",
        ],
        [
            (
                conversation_name(c.members),
                c.members - 1,
                c.frames,
                c.rotation.dynamodb_requests,
                c.rotation.write_requests,
                c.rotation.rcu,
                c.rotation.wcu,
                c.roster_read.dynamodb_requests,
                c.roster_read.rcu,
            )
            for c in costs
        ],
    )


# -- 2. fan-out rate ---------------------------------------------------------------------


@dataclass
class Round:
    pushes_per_s: float
    discarded: int  # pooled connections urllib3 closed (pool full)
    tally: Tally | None = None


def _raw_round(stack: BenchStack, listeners: Listeners, ids: list[str], frame: bytes) -> Round:
    # The handlers' client settings (sotto_server/aws.py), so botocore's pool of 10.
    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
    )
    client = stack.client("apigatewaymanagementapi", config=config)
    targets = ids * FANOUT_MESSAGES
    listeners.expect(len(targets))
    discarded = stack.discarded.count
    started = time.perf_counter()
    with ThreadPoolExecutor(FANOUT_WORKERS) as threads:
        list(threads.map(lambda c: client.post_to_connection(ConnectionId=c, Data=frame), targets))
    if not listeners.reached.wait(120):
        raise TimeoutError("raw pushes did not all arrive")
    rate = len(targets) / (time.perf_counter() - started)
    return Round(rate, stack.discarded.count - discarded)


def _query_round(stack: BenchStack, devices: Sequence[Device]) -> Round:
    """The presence lookup a fan-out makes (100 devices per request), alone, same threads."""
    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    store = ConnectionsStore(
        stack.client("dynamodb", config=config),
        stack.endpoints.resources["tables"]["ConnectionsTable"],
    )
    ids = [d.device_id for d in devices]
    chunks = [ids[i : i + 100] for i in range(0, len(ids), 100)] * FANOUT_MESSAGES
    discarded = stack.discarded.count
    started = time.perf_counter()
    with ThreadPoolExecutor(FANOUT_WORKERS) as threads:
        list(threads.map(store.online, chunks))
    rate = len(ids) * FANOUT_MESSAGES / (time.perf_counter() - started)
    return Round(rate, stack.discarded.count - discarded)


def _fanout_round(
    stack: BenchStack, listeners: Listeners, sender: Sender, cid: str, devices: int
) -> Round:
    listeners.expect(devices * FANOUT_MESSAGES)
    discarded = stack.discarded.count
    with stack.meter.window(probe=False) as tally:
        started = time.perf_counter()
        for _ in range(FANOUT_MESSAGES):
            sender.send(cid)
        if not listeners.reached.wait(300):
            raise TimeoutError("fan-out pushes did not all arrive")
        elapsed = time.perf_counter() - started
        stack.wait_idle()
    return Round(devices * FANOUT_MESSAGES / elapsed, stack.discarded.count - discarded, tally)


def measure_fanout(stack: BenchStack, sender: Sender, others: Sequence[Device]) -> None:
    cid = sender.open(others)
    sender.join(cid)
    listeners = Listeners()
    try:
        with stack.meter.window() as connects:
            headers = [d.headers(stack.audience) for d in others]
            listeners.connect(stack.endpoints.websocket, headers)
            stack.wait_idle()
        sender.rotate(cid)
        sender.send(cid)  # warm-up: chain distributed, first pushes
        stack.wait_idle()
        ids = [c.connection_id for d in others for c in stack.connections.for_device(d.device_id)]
        frame = payload_frame(cid, sender.last_envelope)
        raw: list[Round] = []
        fan: list[Round] = []
        lookups: list[Round] = []
        for _ in range(2):  # interleaved; best of two each
            raw.append(_raw_round(stack, listeners, ids, frame))
            fan.append(_fanout_round(stack, listeners, sender, cid, len(others)))
            lookups.append(_query_round(stack, others))
    finally:
        listeners.close()
        stack.wait_idle()
    best_raw = max(raw, key=lambda r: r.pushes_per_s)
    best_fan = max(fan, key=lambda r: r.pushes_per_s)
    best_query = max(lookups, key=lambda r: r.pushes_per_s)
    # If a push costs one lookup plus one POST and nothing else:
    both = 1 / (1 / best_raw.pushes_per_s + 1 / best_query.pushes_per_s)
    tally = best_fan.tally
    assert tally is not None
    pushes = len(others) * FANOUT_MESSAGES
    queries, posts = tally.requests[FANOUT_QUERY], tally.count("PostToConnection")
    table(
        f"2. Fan-out to {len(others)} online devices, {FANOUT_MESSAGES} messages per round"
        f" ({pushes:,} pushes, {FANOUT_WORKERS} threads and the handlers' client settings"
        " throughout; best of 2 interleaved rounds). Pool discards: connections urllib3"
        " closed because more threads used a client than its pool (botocore's default 10)"
        " holds; each is a new TLS connection in AWS.",
        ["path", "per s", "ratio", "pool discards", "note"],
        [
            (
                "raw post_to_connection, loopback",
                best_raw.pushes_per_s,
                1.0,
                best_raw.discarded,
                "boto3 -> local @connections",
            ),
            (
                "raw presence lookup (devices/s)",
                best_query.pushes_per_s,
                best_query.pushes_per_s / best_raw.pushes_per_s,
                best_query.discarded,
                "ConnectionsStore.online, BatchGetItem of 100, same threads and settings",
            ),
            (
                "  lookup + POST, if nothing else",
                both,
                both / best_raw.pushes_per_s,
                "",
                "1 / (1/raw POST + 1/raw Query)",
            ),
            (
                "fan-out through send",
                best_fan.pushes_per_s,
                best_fan.pushes_per_s / best_raw.pushes_per_s,
                best_fan.discarded,
                f"per push: {queries / pushes:g} BatchGetItem +"
                f" {(posts - FANOUT_MESSAGES) / pushes:g} POST (counted)",
            ),
        ],
    )
    per = len(others)
    table(
        "   cost of connecting one device ($connect authorizer + $connect)",
        ["devices", "requests", "reads", "writes", "RCU", "WCU", "by operation"],
        [
            (
                per,
                connects.dynamodb_requests / per,
                connects.read_requests / per,
                connects.write_requests / per,
                connects.rcu / per,
                connects.wcu / per,
                ", ".join(f"{k} {v / per:g}" for k, v in sorted(connects.requests.items())),
            )
        ],
    )


# -- 3. catch-up ---------------------------------------------------------------------------


def _creation(cid: str, creator: Device, member: Device) -> dal.LogAppend:
    """A room's signed creation operation, for rooms written through the DAL."""
    entries = sorted(
        [
            MemberEntry.of(creator.user_id, creator.identity.public, Role.MODERATOR),
            MemberEntry.of(member.user_id, member.identity.public),
        ],
        key=lambda e: e.user_id,
    )
    now = now_ms()
    change = Create(ConversationKind.ROOM, tuple(entries))
    op = sign_operation(
        creator.secrets, creator.identity.public, None, change, now=now, conversation_id=cid
    )
    keys = [creator.identity.public, member.identity.public]
    state = verify_log([op], keys, conversation_id=cid, now=now)
    return dal.LogAppend(0, op, state.serialize())


def measure_catchup(stack: BenchStack, sender: Device, envelope: bytes) -> Catchup:
    conversations, per_conversation = CATCHUP
    reader = stack.enroll(label="reader")
    store = stack.conversations
    rooms = []
    for _ in range(conversations):
        now = now_ms()
        room = dal.Conversation(
            conversation_id=f"room-{secrets.token_hex(12)}",
            kind="room",
            network_id=stack.network_id,
            created_by=sender.user_id,
            created_at=now,
            last_seq=0,
            roster_version=1,
            member_count=2,
        )
        members = [
            dal.Member(sender.user_id, "moderator", 0),
            dal.Member(reader.user_id, "member", 0),
        ]
        devices = {roster_entry(d.user_id, d.device_id) for d in (sender, reader)}
        log = _creation(room.conversation_id, sender, reader)
        store.create(room, members, devices, max_per_user=MAX_CONVERSATIONS_PER_USER, log=log)
        rooms.append(room)

    def seed(room: dal.Conversation) -> None:
        for _ in range(per_conversation):
            draft = dal.StoredMessage(
                conversation_id=room.conversation_id,
                seq=0,
                envelope=envelope,
                sender_device=sender.device_id,
                message_id=secrets.token_hex(16),
                server_time=now_ms(),
                expires_at=0,
                burn_s=0,
            )
            stored = store.append(room, draft)
            room = replace(room, last_seq=stored.seq)

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(seed, rooms))
    seeded_s = time.perf_counter() - started
    total = conversations * per_conversation
    socket = stack.socket(reader)
    received = syncs = acks = frames = frame_bytes = 0
    stack.wait_idle()
    resume: dict[str, str] = {}
    with stack.meter.window() as tally:
        while True:
            # As the SDK does: each page names the last one's continuation.
            parts = socket.request("sync", **resume)
            resume = {"resume": parts[-1]["resume"]} if "resume" in parts[-1] else {}
            syncs += 1
            through: dict[str, int] = {}
            mail: list[str] = []
            frames += len(parts)
            frame_bytes += sum(len(json.dumps(p, separators=(",", ":"))) for p in parts)
            for part in parts:
                through.update(part["through"])
                mail += [m["mail_id"] for m in part["mail"]]
                received += len(part["messages"])
            socket.request("ack", cursors=through, mail=mail)
            acks += 1
            if not parts[-1]["more"]:
                break
        stack.wait_idle()
    socket.close()
    if received != total:
        raise RuntimeError(f"caught up on {received} of {total} messages")
    message = stack.client("dynamodb").get_item(
        TableName=stack.endpoints.resources["tables"]["MessagesTable"],
        Key={"pk": {"S": f"CONV#{rooms[0].conversation_id}"}, "sk": {"S": f"MSG#{1:012d}"}},
    )["Item"]
    ideal = math.ceil(total * item_size(message) / 4096)
    queries = tally.count("Query")
    table(
        f"3. Catch-up: {total:,} missed messages in {conversations} conversations"
        f" (seeded with ConversationsStore.append in {seeded_s:.0f} s: copies of one real"
        f" {len(envelope)} B envelope, opaque to sync)",
        ["measure", "value", "per 1000 messages"],
        [
            ("sync round trips", syncs, 1000 * syncs / total),
            ("ack round trips", acks, 1000 * acks / total),
            ("read requests", tally.read_requests, 1000 * tally.read_requests / total),
            ("  of which Query", queries, 1000 * queries / total),
            ("    that found nothing", tally.empty_queries, 1000 * tally.empty_queries / total),
            ("  of which GetItem", tally.count("GetItem"), 1000 * tally.count("GetItem") / total),
            (
                "  of which BatchGetItem",
                tally.count("BatchGetItem"),
                1000 * tally.count("BatchGetItem") / total,
            ),
            ("RCU (computed)", tally.rcu, 1000 * tally.rcu / total),
            ("RCU if each message item were read once", ideal, 1000 * ideal / total),
            ("write requests (acks)", tally.write_requests, 1000 * tally.write_requests / total),
            ("WCU (computed)", tally.wcu, 1000 * tally.wcu / total),
            ("sync answer frames", frames, 1000 * frames / total),
        ],
    )
    return Catchup(total, syncs + acks, frames, frame_bytes, tally)


# -- 4. cost ---------------------------------------------------------------------------------


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    started = time.perf_counter()
    with BenchStack() as stack:
        sender_device = stack.enroll(own_identity=True, label="sender")
        pool = [stack.enroll() for _ in range(max(max(ROOMS) - 1, FANOUT_DEVICES))]
        print(
            f"\nlocal stack in-process; {len(pool) + 1} users enrolled through the DAL in"
            f" {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        sender = Sender(stack, sender_device)
        lap = time.perf_counter()
        costs = [measure_room(stack, sender, pool[: members - 1]) for members in ROOMS]
        report_rooms(costs)
        print(f"   ({time.perf_counter() - lap:.0f} s)", flush=True)
        stored = _stored_bytes(stack, next(iter(sender.engines)))
        lap = time.perf_counter()
        measure_fanout(stack, sender, pool[:FANOUT_DEVICES])
        print(f"   ({time.perf_counter() - lap:.0f} s)", flush=True)
        lap = time.perf_counter()
        catchup = measure_catchup(stack, sender_device, sender.last_envelope)
        print(f"   ({time.perf_counter() - lap:.0f} s)", flush=True)
        sender.socket.close()
        report_cost(costs, stored, catchup)
    print(f"\n(bench_messaging took {time.perf_counter() - started:.0f} s)")


def _stored_bytes(stack: BenchStack, cid: str) -> int:
    """The size one message keeps in the table: its MSG# and MID# items (+100 B overhead each)."""
    probe = stack.client("dynamodb")
    table = stack.endpoints.resources["tables"]["MessagesTable"]
    mid = probe.query(
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MID#"}},
        Limit=1,
    )["Items"][0]
    key = {"pk": mid["pk"], "sk": {"S": f"MSG#{int(mid['seq']['N']):012d}"}}
    message = probe.get_item(TableName=table, Key=key)["Item"]
    return item_size(message) + item_size(mid) + 200


if __name__ == "__main__":
    main()
