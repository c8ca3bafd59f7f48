"""The messages stream into the retention archive (``logic/archiver.py``).

Powertools' BatchProcessor reads each record (one that cannot be read is a
partial failure of its own); the records read are then archived together,
one segment per network, and any a network could not commit are reported
as failures too, so the event source retries from the first of them
(bisecting on an error, at most ``max_retries`` times, then the on-failure
queue). Retrying is safe: what was committed is not archived again.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from .. import aws
from ..dal.archive import ArchiveHeads, ArchiveObjects
from ..logic import archiver
from ._socket import directory_store
from ._stores import conversations_store, retention_store

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_read: list[archiver.StreamItem] = []


def _stores() -> archiver.ArchiverStores:
    from ..config import settings

    return archiver.ArchiverStores(
        directory=directory_store(),
        conversations=conversations_store(),
        retention=retention_store(),
        heads=ArchiveHeads(aws.dynamodb_client(), settings().table_name("MessagesTable")),
        objects=ArchiveObjects(
            aws.s3_client(), os.environ["SOTTO_ARCHIVE_BUCKET"], os.environ["SOTTO_ARCHIVE_KEY_ID"]
        ),
        files_bucket=settings().bucket_name("AttachmentsBucket"),
    )


def record_handler(record: DynamoDBRecord) -> None:
    _read.append(archiver.stream_item(record.raw_event))


def _now_ms() -> int:
    return int(time.time() * 1000)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _read.clear()
    with processor(records=event.get("Records") or [], handler=record_handler):
        processor.process()
    failures = [f["itemIdentifier"] for f in processor.response()["batchItemFailures"]]
    done = archiver.archive(_stores(), list(_read), _now_ms)
    for problem in done.problems:
        logger.error("archive segment not committed", problem=problem)
    failures += done.failed
    lags = [_now_ms() - item.created_ms for item in _read if item.created_ms]
    logger.info(
        "archived",
        records=done.records,
        segments=done.segments,
        failed=len(failures),
        max_lag_ms=max(lags, default=0),
    )
    metrics.add_metric(name="ArchivedRecords", unit=MetricUnit.Count, value=done.records)
    metrics.add_metric(name="ArchiveFailures", unit=MetricUnit.Count, value=len(failures))
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failures]}
