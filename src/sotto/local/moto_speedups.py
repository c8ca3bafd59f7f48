"""Make moto's DynamoDB cost what DynamoDB's does: O(items touched), not O(table size).

Two moto 5 behaviours are properties of the stand-in, not of DynamoDB. A
local stack that has run for a few minutes (a test session, a benchmark)
holds thousands of items, and they make every request slow enough for
clients to time out (and a 1000-member room unbuildable):

- ``TransactWriteItems`` backs up by deep-copying the *whole table*, once
  per item of the transaction: with a few thousand items a three-item
  transaction takes hundreds of milliseconds, a 100-item one tens of seconds.
- ``Query`` sorts every item of the table (``Table.all_items()``) and scans
  them to find one partition's items, on the table's key or an index's.
- Every attribute value of every answer goes through moto's generic,
  model-driven serializer, which tries each of the ten members of the
  ``AttributeValue`` union under several spellings: reading a hundred
  certificates (``BatchGetItem``) costs tens of milliseconds of CPU in the
  stand-in, where DynamoDB answers in a few.

While ``fast_moto()`` is active, a transaction snapshots only the items it
names (restored if it is cancelled) instead of copying tables, a
Query starts from its partition's items (an index's by a plain filter,
moto keeping no index structure) rather than from the sorted table, and
attribute values (DynamoDB and its streams) are written to the JSON answer
directly, in DynamoDB's wire form. A
cancelled transaction also drops the stream records moto wrote while
applying it (DynamoDB streams only what commits). The local stack serves one
moto request at a time, so DynamoDB's all-or-nothing semantics hold.
Request counts are not affected: this changes what happens inside moto,
not what the handlers send.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["fast_moto"]


class _NoTableCopies:
    """Stands in for the ``copy`` module inside moto's DynamoDB backend."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value  # the whole-table backup; _Snapshot covers what is written
        return copy.deepcopy(value, memo)


class _Snapshot:
    """The items a transaction names, as they were before it ran."""

    def __init__(self, backend: Any, transact_items: list[dict[str, Any]]) -> None:
        self._saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue  # moto raises ResourceNotFound itself
            attrs = op.get("Item") or op.get("Key") or {}
            if table.hash_key_attr not in attrs:
                continue  # moto raises the validation error itself
            hash_key, range_key = backend.get_keys_value(table, attrs)
            current = table.get_item(hash_key, range_key)
            self._saved.append((table, hash_key, range_key, copy.deepcopy(current)))
        # moto writes stream records as it applies each item; a cancelled
        # transaction must leave none (DynamoDB streams only what committed).
        self._streams = {
            id(shard): (shard, len(shard.items))
            for table, *_ in self._saved
            if (shard := table.stream_shard) is not None
        }

    def restore(self) -> None:
        for shard, length in self._streams.values():
            del shard.items[length:]
        for table, hash_key, range_key, item in reversed(self._saved):
            if item is None:
                if range_key is not None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items.pop(hash_key, None)
            elif range_key is not None:
                table.items[hash_key][range_key] = item
            else:
                table.items[hash_key] = item


def _partition(table: Any, hash_key: Any) -> list[Any]:
    found = table.items.get(hash_key)
    if found is None:
        return []
    return list(found.values()) if table.range_key_attr else [found]


def _index_partition(table: Any, conditions: list[tuple[str, Any]]) -> list[Any]:
    items = (
        (i for group in table.items.values() for i in group.values())
        if table.range_key_attr
        else iter(table.items.values())
    )
    # Items without the index's key are not in the index (a sparse GSI).
    return [
        i
        for i in items
        if all(name in i.attrs and i.attrs[name] == value for name, value in conditions)
    ]


_ATTRIBUTE_SERVICES = frozenset({"dynamodb", "dynamodbstreams"})


def _wire(value: dict[str, Any]) -> dict[str, Any]:
    """One attribute value as DynamoDB's JSON has it (moto hands binaries over as bytes)."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": _b64(inner)}
    if kind == "BS":
        return {"BS": [_b64(v) for v in inner]}
    if kind == "M":
        return {"M": {k: _wire(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_wire(v) for v in inner]}
    return {kind: inner}  # S, N, SS, NS, BOOL, NULL: already their wire form


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


@contextmanager
def fast_moto() -> Iterator[None]:
    from moto.core.serialize import BaseJSONSerializer
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items
    original_copy = getattr(models, "copy")  # noqa: B009 (not re-exported by moto)
    original_query = Table.query

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        conditions = kwargs.get("hash_key_conditions")
        if index_name is None and hash_key is not None:
            self.all_items = lambda: _partition(self, hash_key)  # what the scan would keep
        elif index_name is not None and conditions:
            self.all_items = lambda: _index_partition(self, conditions)
        else:
            return original_query(self, hash_key, *args, **kwargs)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshot = _Snapshot(self, transact_items)
        try:
            original(self, transact_items)
        except Exception:
            snapshot.restore()
            raise

    original_serialize = BaseJSONSerializer._serialize
    own_serialize = "_serialize" in vars(BaseJSONSerializer)  # else inherited

    def serialize(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            shape.name == "AttributeValue"
            and isinstance(value, dict)
            and len(value) == 1
            and self.operation_model.service_model.service_name in _ATTRIBUTE_SERVICES
        ):
            self._default_serialize(serialized, _wire(value), shape, key)
        else:
            original_serialize(self, serialized, value, shape, key)

    setattr(models, "copy", _NoTableCopies(Table))  # noqa: B010
    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    BaseJSONSerializer._serialize = serialize  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own_serialize:
            BaseJSONSerializer._serialize = original_serialize  # type: ignore[method-assign]
        else:
            del BaseJSONSerializer._serialize
        Table.query = original_query  # type: ignore[method-assign]
        backend_class.transact_write_items = original  # type: ignore[method-assign]
        setattr(models, "copy", original_copy)  # noqa: B010
