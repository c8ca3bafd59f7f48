"""The messages stream: a file record removed takes its object (every version) with it.

A record leaves when its message's end passes (TTL), when its upload was
abandoned (TTL a day after it started) or aborted. The REMOVE record's key
names the object; deleting is idempotent, so a retried record is harmless.
The bucket's lifecycle rules are only the backstop (docs/architecture.md).
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

from ..aws import s3_client
from ..config import settings
from ..dal.files import object_of_record
from ..dal.objects import ObjectsStore

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def record_handler(record: DynamoDBRecord) -> None:
    stream = record.dynamodb
    keys = stream.keys if stream is not None else None
    if record.event_name != DynamoDBRecordEventName.REMOVE or not keys:
        return
    key = object_of_record(str(keys.get("pk", "")))
    if key is None:
        return
    objects = ObjectsStore(s3_client(), settings().bucket_name("AttachmentsBucket"), "")
    removed = objects.purge(key)
    logger.info("file object deleted", versions_and_uploads=removed)
    metrics.add_metric(name="FileObjectsDeleted", unit=MetricUnit.Count, value=removed)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
