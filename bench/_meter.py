"""Count what the handlers ask of AWS, through botocore's events.

``Meter.install(session)`` registers on a boto3 session (the default one,
which the handlers' ``boto3.client(...)`` calls use):

- ``provide-client-params.dynamodb.*`` adds ``ReturnConsumedCapacity=TOTAL``
  to every operation that accepts it;
- ``before-call.*`` / ``after-call.*`` count each DynamoDB and @connections
  request by operation, table and index, time it, and sum the
  ``ConsumedCapacity`` moto reports.

moto's ``ConsumedCapacity`` is a constant per request (GetItem 0.5, the
others 1.0, none at all for UpdateItem and TransactWriteItems), whatever the
item size or consistency. So the meter also *computes* capacity by
DynamoDB's rules from the item sizes: reads 1 RCU per 4 KB (strongly
consistent; half for eventually consistent; a Query rounds the summed size
of its page), writes 1 WCU per 1 KB of the larger of the old and new item,
transactional requests twice that, a GSI write for each written item the
index holds (projection ALL). Old and new item sizes come from a separate,
uncounted client ("probe") when ``probe=True``; the probe's own requests
are not counted.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sotto import topology

__all__ = ["Meter", "Tally", "item_size"]

_STATE = "sotto_bench_meter"
_TX = "TransactWriteItems"


def _number_size(text: str) -> int:
    digits = text.lstrip("-").split("e")[0].split("E")[0].replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "B":
        return len(data)
    if kind == "N":
        return _number_size(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: Mapping[str, Any] | None) -> int:
    """DynamoDB's size of an item: attribute names plus values (docs: Item sizes)."""
    if not item:
        return 0
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


def _write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


@dataclass
class Tally:
    """What one measured window asked of DynamoDB and @connections."""

    requests: Counter[str] = field(default_factory=Counter)  # "Op Table[/index]"
    seconds: Counter[str] = field(default_factory=Counter)  # time in each kind of request
    rcu: float = 0.0  # computed
    wcu: float = 0.0  # computed
    moto_units: float = 0.0  # as moto reported them
    read_requests: int = 0
    write_requests: int = 0
    empty_queries: int = 0  # Query requests that found nothing

    def count(self, operation: str) -> int:
        return sum(n for key, n in self.requests.items() if key.split(" ")[0] == operation)

    @property
    def dynamodb_requests(self) -> int:
        return self.read_requests + self.write_requests


_READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", _TX}


class Meter:
    def __init__(self, tables: Mapping[str, str], probe: Any) -> None:
        """``tables``: logical id -> physical name; ``probe``: an uncounted DynamoDB client."""
        self._logical = {physical: logical for logical, physical in tables.items()}
        self._specs = {physical: topology.table(logical) for logical, physical in tables.items()}
        self._probe = probe
        self._lock = threading.Lock()
        self._tally: Tally | None = None
        self._probing = False

    # -- windows ---------------------------------------------------------------

    @contextmanager
    def window(self, *, probe: bool = True) -> Iterator[Tally]:
        """Count everything the handlers do until the block ends."""
        tally = Tally()
        with self._lock:
            self._tally, self._probing = tally, probe
        try:
            yield tally
        finally:
            with self._lock:
                self._tally = None

    def install(self, session: Any) -> None:
        events = session.events
        events.register("provide-client-params.dynamodb.*", self._ask_for_capacity)
        for service in ("dynamodb", "apigatewaymanagementapi"):
            events.register(f"before-call.{service}.*", self._before)
            events.register(f"after-call.{service}.*", self._after)

    # -- botocore event handlers -------------------------------------------------

    def _ask_for_capacity(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        context = kwargs.get("context")
        if context is not None:
            context[_STATE] = {"params": params}

    def _before(self, model: Any, context: dict[str, Any], **kwargs: Any) -> None:
        if self._tally is None:
            return
        state = context.setdefault(_STATE, {})
        state["started"] = time.perf_counter()
        if self._probing and model.name in _WRITES:
            state["old"] = [self._current_size(t, k) for t, k, _ in self._writes(model, state)]

    def _after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        tally = self._tally
        state = context.get(_STATE)
        if tally is None or state is None or "started" not in state:
            return
        elapsed = time.perf_counter() - state["started"]
        params = state.get("params", {})
        key = model.name
        table = params.get("TableName")
        if model.name == _TX:
            table = params["TransactItems"][0][next(iter(params["TransactItems"][0]))]["TableName"]
        elif model.name in ("BatchWriteItem", "BatchGetItem"):
            table = next(iter(params["RequestItems"]))
        if table is not None:
            key += f" {self._logical.get(table, table)}"
            if params.get("IndexName"):
                key += f"/{params['IndexName']}"
        rcu = wcu = 0.0
        if self._probing and model.name in _READS:
            rcu = self._read_capacity(model.name, params, parsed)
        elif self._probing and model.name in _WRITES:
            wcu = self._write_capacity(model, state)
        reported = parsed.get("ConsumedCapacity")
        if isinstance(reported, dict):
            reported = [reported]
        moto_units = sum(float(c.get("CapacityUnits", 0)) for c in reported or [])
        with self._lock:
            tally.requests[key] += 1
            tally.seconds[key.split(" ")[0]] += elapsed
            tally.rcu += rcu
            tally.wcu += wcu
            tally.moto_units += moto_units
            if model.name == "Query" and not parsed.get("Items"):
                tally.empty_queries += 1
            if model.name in _READS:
                tally.read_requests += 1
            elif model.name in _WRITES:
                tally.write_requests += 1

    # -- capacity by DynamoDB's rules ----------------------------------------------

    def _read_capacity(self, operation: str, params: dict[str, Any], parsed: Any) -> float:
        consistent = bool(params.get("ConsistentRead")) and not params.get("IndexName")
        if operation == "GetItem":
            return _read_units(item_size(parsed.get("Item")), consistent=consistent)
        if operation in ("Query", "Scan"):
            size = sum(item_size(i) for i in parsed.get("Items", []))
            return _read_units(size, consistent=consistent)
        if operation == "BatchGetItem":
            # Each item is its own read, rounded up on its own (consistency per table).
            units = 0.0
            for table, items in (parsed.get("Responses") or {}).items():
                request = params.get("RequestItems", {}).get(table, {})
                strong = bool(request.get("ConsistentRead"))
                units += sum(_read_units(item_size(i), consistent=strong) for i in items)
            return units
        if operation == "TransactGetItems":
            # Transactional reads cost twice a strongly consistent read, per item.
            responses = parsed.get("Responses") or []
            return sum(
                2 * _read_units(item_size(r.get("Item")), consistent=True) for r in responses
            )
        raise ValueError(f"{operation} is not a DynamoDB read")

    def _writes(self, model: Any, state: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
        """(table, key, new item or None) of every item a write request touches."""
        params = state["params"]
        if model.name == "PutItem":
            item = params["Item"]
            return [(params["TableName"], self._key(params["TableName"], item), item)]
        if model.name in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], None)]
        touched = []
        if model.name == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        touched.append((table, self._key(table, item), item))
                    else:
                        touched.append((table, request["DeleteRequest"]["Key"], None))
        else:  # TransactWriteItems
            for entry in params["TransactItems"]:
                op = next(iter(entry.values()))
                table = op["TableName"]
                item = op.get("Item")
                touched.append((table, self._key(table, item) if item else op["Key"], item))
        return touched

    def _write_capacity(self, model: Any, state: dict[str, Any]) -> float:
        params = state["params"]
        factor = 2 if model.name == _TX else 1
        kinds = [next(iter(e)) for e in params["TransactItems"]] if model.name == _TX else None
        total = 0.0
        for index, (table, key, new) in enumerate(self._writes(model, state)):
            old_size, old_indexed = state.get("old", [(0, False)] * (index + 1))[index]
            kind = kinds[index] if kinds else model.name
            if new is not None:
                new_size, new_indexed = item_size(new), self._indexed(table, new)
            elif kind in ("UpdateItem", "Update"):
                new_size, new_indexed = self._current_size(table, key)
            else:  # a delete or a condition check
                new_size, new_indexed = 0, False
            size = max(old_size, new_size)
            total += factor * _write_units(size)
            if old_indexed or new_indexed:
                total += _write_units(size)  # the index's copy (projection ALL)
        return total

    def _key(self, table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._specs[table]
        names = [spec.partition_key] + ([spec.sort_key] if spec.sort_key else [])
        return {name: item[name] for name in names}

    def _indexed(self, table: str, item: Mapping[str, Any]) -> bool:
        return any(index.partition_key in item for index in self._specs[table].indexes)

    def _current_size(self, table: str, key: dict[str, Any]) -> tuple[int, bool]:
        item = self._probe.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item_size(item), bool(item) and self._indexed(table, item)
