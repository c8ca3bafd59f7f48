"""Dollars from counts: AWS list prices applied to what bench_messaging measured.

Prices are us-east-1 list prices (assumed; check the AWS pricing pages):
DynamoDB on-demand after the November 2024 cut, Lambda on arm64, API
Gateway WebSocket messages (billed in 32 KB units, sent or received).
Lambda duration cannot be measured against moto, so it is modelled from the
request counts with the latencies below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sotto import topology
from sotto_server.handlers._routes import FANOUT_WORKERS
from sotto_server.logic.frames import b64

from ._meter import Tally
from ._report import conversation_name, table

__all__ = ["FANOUT_QUERY", "Catchup", "RoomCost", "report_cost"]

# The fan-out's lookup of open sockets: one request per 100 roster devices.
FANOUT_QUERY = "BatchGetItem ConnectionsTable"

# AWS list prices, us-east-1 (on-demand DynamoDB after the Nov 2024 cut).
PRICE_WRU = 0.625 / 1e6
PRICE_RRU = 0.125 / 1e6
PRICE_STORAGE_GB_MONTH = 0.25
PRICE_LAMBDA_GB_S = 0.0000133334  # arm64
PRICE_LAMBDA_REQUEST = 0.20 / 1e6
PRICE_WS_MESSAGE = 1.00 / 1e6  # per 32 KB unit, sent or received
# Lambda duration is modelled from the counts (moto answers in ~2 ms, DynamoDB in ~5):
MODEL_CPU_MS = 3.0  # envelope + certificate checks, JSON
MODEL_DYNAMODB_MS = 5.0  # one in-region DynamoDB round trip
MODEL_PUSH_MS = 20.0  # one push (PostToConnection), per worker


@dataclass
class RoomCost:
    members: int
    steady: Tally  # all the steady-state sends
    rotation: Tally
    roster_read: Tally
    frames: int
    frame_bytes: int
    handler_ms: float  # measured locally, per send (moto, loopback)
    envelope_bytes: int
    messages: int  # steady-state sends measured

    def per(self, value: float) -> float:
        return value / self.messages

    @property
    def notices(self) -> float:
        """Pushes per message with every other device online (one device per member)."""
        return float(self.members - 1)

    @property
    def serial_requests(self) -> float:
        return self.per(self.steady.dynamodb_requests)


@dataclass
class Catchup:
    messages: int
    round_trips: int  # sync and ack requests: Lambda invocations
    frames: int  # sync answer frames
    frame_bytes: int
    tally: Tally


def _lambda_cost(invocations: int, serial_requests: float, notices_each: float) -> float:
    """Requests plus modelled GB-s of ``invocations`` that make ``serial_requests`` in all."""
    memory_gb = topology.function("messages").memory_mb / 1024
    rounds = invocations * math.ceil(notices_each / FANOUT_WORKERS)
    duration_ms = invocations * MODEL_CPU_MS + serial_requests * MODEL_DYNAMODB_MS
    duration_ms += rounds * MODEL_PUSH_MS
    return invocations * PRICE_LAMBDA_REQUEST + duration_ms / 1000 * memory_gb * PRICE_LAMBDA_GB_S


def report_cost(costs: Sequence[RoomCost], stored_bytes: int, catchup: Catchup) -> None:
    rows: list[tuple[Any, ...]] = []
    for c in costs:
        dynamodb = c.per(c.steady.rcu) * PRICE_RRU + c.per(c.steady.wcu) * PRICE_WRU
        lam = _lambda_cost(1, c.serial_requests, c.notices)
        # In: the send frame; out: the "sent" answer and one push per online device.
        inbound = math.ceil((len(b64(b"x" * c.envelope_bytes)) + 200) / 32768)
        gateway = (inbound + 1 + c.notices) * PRICE_WS_MESSAGE
        r = c.rotation
        notices = float(c.members - 1)  # one mail push per other device, all online
        rotation = r.rcu * PRICE_RRU + r.wcu * PRICE_WRU
        rotation += _lambda_cost(c.frames, r.dynamodb_requests, notices / c.frames)
        units = c.frames * math.ceil(c.frame_bytes / max(1, c.frames) / 32768)
        rotation += (units + c.frames + notices) * PRICE_WS_MESSAGE
        rows.append(
            (
                conversation_name(c.members),
                1e6 * dynamodb,
                1e6 * lam,
                1e6 * gateway,
                1e6 * (dynamodb + lam + gateway),
                1e6 * (dynamodb + lam + gateway) / (c.members - 1),
                1e3 * rotation,
            )
        )
    # A device that was offline reads by sync instead of receiving a push.
    t, n = catchup.tally, catchup.messages
    sync_dynamodb = (t.rcu * PRICE_RRU + t.wcu * PRICE_WRU) / n
    sync_lambda = _lambda_cost(catchup.round_trips, t.dynamodb_requests, 0) / n
    sync_units = catchup.round_trips + catchup.frames * math.ceil(
        catchup.frame_bytes / catchup.frames / 32768
    )
    sync_gateway = sync_units * PRICE_WS_MESSAGE / n
    rows.append(
        (
            "offline device, by sync (per device)",
            1e6 * sync_dynamodb,
            1e6 * sync_lambda,
            1e6 * sync_gateway,
            1e6 * (sync_dynamodb + sync_lambda + sync_gateway),
            1e6 * (sync_dynamodb + sync_lambda + sync_gateway),
            "",
        )
    )
    storage = stored_bytes * 1e6 / 1e9 * PRICE_STORAGE_GB_MONTH
    print(
        "\n4. $ per million messages at us-east-1 list prices (assumed): DynamoDB on-demand"
        f" ${PRICE_WRU * 1e6:g}/M WRU, ${PRICE_RRU * 1e6:g}/M RRU, storage"
        f" ${PRICE_STORAGE_GB_MONTH:g}/GB-month; Lambda arm64 ${PRICE_LAMBDA_GB_S:.10f}/GB-s +"
        f" ${PRICE_LAMBDA_REQUEST * 1e6:.2f}/M requests; API Gateway WebSocket"
        f" ${PRICE_WS_MESSAGE * 1e6:.2f}/M messages (32 KB units, in or out).\n"
        "   Derived from the counts above, every recipient device online (one push each)."
        f" Lambda ({topology.function('messages').memory_mb} MB) duration is modelled:"
        f" {MODEL_CPU_MS:g} ms + {MODEL_DYNAMODB_MS:g} ms per serial DynamoDB request +"
        f" {MODEL_PUSH_MS:g} ms per round of {FANOUT_WORKERS} concurrent notices.\n"
        f"   Storage: {stored_bytes} B per message (MSG + MID items), ${storage:.3f} per month"
        " per million kept. Not per message: connection minutes ($0.25/M), KMS (DynamoDB"
        " caches the table key)."
    )
    table(
        "",
        [
            "conversation",
            "DynamoDB",
            "Lambda",
            "API Gateway",
            "total",
            "per M deliveries",
            "$ per 1000 rotations",
        ],
        rows,
    )
