"""Pushing through @connections: a gone connection is forgotten, nothing else is."""

from __future__ import annotations

import json
import time

from botocore.stub import Stubber
from websockets.sync.client import connect

from sotto_server.dal.connections import Connection, ConnectionsStore
from sotto_server.logic.push import push

from .test_gateway import connection_ids, receive_json, wait_for


def record(connection_id: str, device_id: str) -> Connection:
    now = int(time.time())
    return Connection(connection_id, device_id, "user-x", "net-x", now, now + 60)


def test_push_to_gone_connection_deletes_only_that_record(stack, device):
    store = ConnectionsStore(stack.client("dynamodb"), stack.table("ConnectionsTable"))
    client = stack.connections_client()
    with connect(stack.websocket, additional_headers=device.headers(stack.audience)) as ws:
        ws.send(json.dumps({"action": "ping"}))
        receive_json(ws)
        (live_id,) = connection_ids(stack, device)
        store.put(record("GONEGONEGONEGON=", device.device_id))

        assert push(client, store, "GONEGONEGONEGON=", b'{"n":1}') == "gone"
        assert push(client, store, live_id, b'{"n":2}') == "delivered"
        assert receive_json(ws) == {"n": 2}
        assert connection_ids(stack, device) == [live_id]


def test_push_failure_other_than_gone_keeps_the_record(stack, device):
    store = ConnectionsStore(stack.client("dynamodb"), stack.table("ConnectionsTable"))
    store.put(record("FAILFAILFAILFAI=", device.device_id))
    client = stack.connections_client()
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "LimitExceededException", http_status_code=429)
        assert push(client, store, "FAILFAILFAILFAI=", b"{}") == "failed"
    assert "FAILFAILFAILFAI=" in connection_ids(stack, device)
    store.delete("FAILFAILFAILFAI=")


def test_presence_lists_open_sockets_and_forgets_closed_ones(stack, device):
    store = ConnectionsStore(stack.client("dynamodb"), stack.table("ConnectionsTable"))
    with connect(stack.websocket, additional_headers=device.headers(stack.audience)) as ws:
        ws.send(json.dumps({"action": "ping"}))
        receive_json(ws)
        (live_id,) = connection_ids(stack, device)
        assert store.online([device.device_id, "dev-nobody"]) == {device.device_id: [live_id]}
    assert wait_for(lambda: store.online([device.device_id]) == {})


def test_a_stale_presence_entry_is_dropped_on_its_410(stack, device):
    store = ConnectionsStore(stack.client("dynamodb"), stack.table("ConnectionsTable"))
    # A $disconnect that never came: the record and presence say "open".
    store.put(record("STALESTALESTALE=", device.device_id))
    assert store.online([device.device_id]) == {device.device_id: ["STALESTALESTALE="]}
    assert push(stack.connections_client(), store, "STALESTALESTALE=", b"{}") == "gone"
    assert store.online([device.device_id]) == {}
