"""DynamoDB stream event source mappings, run locally the way Lambda runs them.

For each function of ``sotto.topology`` with a ``stream_source``, a thread
polls the table's stream in moto (as Lambda polls each shard a few times a
second) and invokes the function with Lambda's event shape:

- records that match none of the source's filter patterns are dropped
  unseen, as Lambda's event filtering drops them;
- a response's ``batchItemFailures`` checkpoints before the first failed
  record and retries the batch from there (partial batch response);
- a batch whose invocation raises is bisected and each half retried;
- a record still failing after ``max_retries`` is reported to the
  on-failure queue (metadata only, as Lambda's on-failure destination does)
  and the shard moves on.

Records are handled in shard order, one batch at a time.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import boto3

from sotto import topology

from .events import REGION
from .lambdas import FunctionError, LocalFunctions

__all__ = ["StreamPoller", "matches"]

log = logging.getLogger("sotto.local.streams")
# Lambda polls each shard about four times a second.
POLL_INTERVAL_S = 0.25


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether ``event`` matches a Lambda event filter pattern.

    The subset Sotto uses: nested objects, lists of allowed literal values,
    and the ``prefix``, ``exists`` and ``anything-but`` rules.
    """
    if not isinstance(event, Mapping):
        return False
    for name, wanted in pattern.items():
        present = name in event
        value = event.get(name)
        if isinstance(wanted, Mapping):
            if not present or not matches(wanted, value):
                return False
        elif isinstance(wanted, list):
            if not any(_allows(rule, present, value) for rule in wanted):
                return False
        else:
            raise ValueError(f"filter values are objects or lists, not {wanted!r}")
    return True


def _allows(rule: Any, present: bool, value: Any) -> bool:
    if isinstance(rule, Mapping):
        if "exists" in rule:
            return present is bool(rule["exists"])
        if "prefix" in rule:
            return isinstance(value, str) and value.startswith(str(rule["prefix"]))
        if "anything-but" in rule:
            excluded = rule["anything-but"]
            excluded = excluded if isinstance(excluded, list) else [excluded]
            return present and value not in excluded
        raise ValueError(f"unsupported filter rule {rule!r}")
    return present and value == rule


def _jsonable(value: Any) -> Any:
    """boto3's shapes as Lambda's JSON event has them (binary as base64)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


class StreamPoller:
    """One event source mapping: a table's stream feeding one function."""

    def __init__(
        self,
        functions: LocalFunctions,
        spec: topology.FunctionSpec,
        *,
        endpoint: str,
        table_name: str,
        queue_url: str,
        credentials: Mapping[str, str],
        after_sequence: str | None = None,
    ) -> None:
        if spec.stream_source is None:
            raise ValueError(f"{spec.name} has no stream source")
        self.functions = functions
        self.spec = spec
        self.source = spec.stream_source
        session = boto3.session.Session(
            aws_access_key_id=credentials["aws_access_key_id"],
            aws_secret_access_key=credentials["aws_secret_access_key"],
            region_name=credentials["region_name"],
        )
        self._streams = session.client("dynamodbstreams", endpoint_url=endpoint)
        self._sqs = session.client("sqs", endpoint_url=endpoint)
        dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        self.stream_arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._queue_url = queue_url
        # The last record handed to the function: a restarted stack resumes after it.
        self.position = after_sequence
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    # -- polling -------------------------------------------------------------

    def _run(self) -> None:
        shard = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"][
            "Shards"
        ][0]["ShardId"]
        where: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        if self.position is not None:
            where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.position}
        iterator = self._streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard, **where
        )["ShardIterator"]
        while not self._stop.is_set():
            try:
                answer = self._streams.get_records(ShardIterator=iterator, Limit=1000)
            except Exception:
                if self._stop.is_set():
                    return  # moto is going away with the stack
                log.exception("reading the %s stream failed", self.source.table)
                self._stop.wait(1.0)
                continue
            iterator = answer["NextShardIterator"]
            records = [self._event_record(r) for r in answer.get("Records", [])]
            wanted = [r for r in records if any(matches(f, r) for f in self.source.filters)]
            for start in range(0, len(wanted), self.source.batch_size):
                self._deliver(wanted[start : start + self.source.batch_size], attempt=0)
            if records and not self._stop.is_set():
                self.position = str(records[-1]["dynamodb"]["SequenceNumber"])
            if not answer.get("Records"):
                self._stop.wait(POLL_INTERVAL_S)

    def _event_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        event = _jsonable(record)
        event["eventSourceARN"] = self.stream_arn
        event.setdefault("awsRegion", REGION)
        return dict(event)

    # -- invoking -------------------------------------------------------------

    def _deliver(self, batch: Sequence[dict[str, Any]], attempt: int) -> None:
        while batch and not self._stop.is_set():
            try:
                result = self.functions.invoke_sync(self.spec.name, {"Records": list(batch)})
            except FunctionError:
                if self.source.bisect_on_error and len(batch) > 1:
                    half = len(batch) // 2
                    self._deliver(batch[:half], attempt)
                    self._deliver(batch[half:], attempt)
                    return
                failed_at = 0
            else:
                failure = _first_failure(batch, result)
                if failure is None:
                    return
                failed_at = failure
            attempt += 1
            if attempt > self.source.max_retries:
                self._give_up(batch[failed_at])
                batch, attempt = batch[failed_at + 1 :], 0
                continue
            batch = batch[failed_at:]
            self._stop.wait(min(0.2 * 2**attempt, 2.0))

    def _give_up(self, record: Mapping[str, Any]) -> None:
        sequence = record["dynamodb"]["SequenceNumber"]
        log.error("%s gave up on stream record %s", self.spec.name, sequence)
        report = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"function:{self.spec.name}",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": self.source.max_retries + 1,
            },
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "DDBStreamBatchInfo": {
                "streamArn": self.stream_arn,
                "startSequenceNumber": sequence,
                "endSequenceNumber": sequence,
                "batchSize": 1,
            },
        }
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(report))


def _first_failure(batch: Sequence[Mapping[str, Any]], result: Any) -> int | None:
    """The index of the first record a partial batch response names, or None."""
    failures = result.get("batchItemFailures") if isinstance(result, Mapping) else None
    if not failures:
        return None
    failed = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, Mapping)}
    for index, record in enumerate(batch):
        if str(record["dynamodb"]["SequenceNumber"]) in failed:
            return index
    return 0  # an identifier Lambda cannot place: it retries the whole batch
