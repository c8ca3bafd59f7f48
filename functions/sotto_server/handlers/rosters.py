"""The directory stream: devices join and leave rosters, revoked sockets close again.

The event source mapping delivers only the changes ``topology`` filters for
(a device created, a device revoked, a user suspended); records are handled
in shard order, one at a time, and failures are reported per record so the
stream retries from the first one that failed (each step is idempotent).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws import connections_client
from ..logic import rosters
from ..logic.push import disconnect
from ._socket import connections_store, directory_store
from ._stores import conversations_store

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def _disconnect(connection_id: str) -> None:
    disconnect(connections_client(), connections_store(), connection_id)


def _stores() -> rosters.Stores:
    return rosters.Stores(
        directory=directory_store(),
        conversations=conversations_store(),
        connections=connections_store(),
        disconnect=_disconnect,
    )


def change_of(record: DynamoDBRecord) -> rosters.DirectoryChange | None:
    """What a stream record means for rosters and sockets; None for anything else."""
    stream = record.dynamodb
    keys = stream.keys if stream is not None else None
    image = stream.new_image if stream is not None else None
    if not keys or not image:
        return None
    pk, sk, status = str(keys.get("pk", "")), keys.get("sk"), image.get("status")
    if sk == "USER" and status == "suspended":
        return rosters.DirectoryChange("user_suspended", pk.removeprefix("USER#"))
    if sk != "DEVICE" or not isinstance(image.get("user_id"), str):
        return None
    device_id, user_id = pk.removeprefix("DEVICE#"), str(image["user_id"])
    if status == "revoked":
        return rosters.DirectoryChange("device_revoked", user_id, device_id)
    if record.event_name == DynamoDBRecordEventName.INSERT and status == "active":
        return rosters.DirectoryChange("device_added", user_id, device_id)
    return None


def record_handler(record: DynamoDBRecord) -> None:
    change = change_of(record)
    if change is None:
        return
    applied = rosters.apply(_stores(), change)
    logger.info(
        "directory change applied",
        kind=change.kind,
        user_id=change.user_id,
        device_id=change.device_id,
        conversations=applied.conversations,
        changed=applied.changed,
        sockets_closed=applied.sockets_closed,
    )
    metrics.add_metric(name="RosterChanges", unit=MetricUnit.Count, value=applied.changed)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
