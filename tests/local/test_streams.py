"""The local event source mapping: Lambda's filtering, partial batches, bisect and give-up."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from sotto import topology
from sotto.local.lambdas import FunctionError
from sotto.local.streams import StreamPoller, matches

DEVICE_INSERT: dict[str, Any] = {
    "eventName": "INSERT",
    "dynamodb": {"Keys": {"pk": {"S": "DEVICE#d1"}, "sk": {"S": "DEVICE"}}},
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"eventName": ["INSERT"]}, True),
        ({"eventName": ["MODIFY", "REMOVE"]}, False),
        ({"dynamodb": {"Keys": {"sk": {"S": ["DEVICE"]}}}}, True),
        ({"dynamodb": {"Keys": {"sk": {"S": ["USER"]}}}}, False),
        ({"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "DEVICE#"}]}}}}, True),
        ({"dynamodb": {"NewImage": {"status": {"S": ["revoked"]}}}}, False),
        ({"dynamodb": {"NewImage": [{"exists": False}]}}, True),
        ({"eventName": [{"anything-but": ["REMOVE"]}]}, True),
        ({"eventName": [{"anything-but": "INSERT"}]}, False),
    ],
)
def test_filter_patterns_match_as_lambda_s_do(pattern, expected):
    assert matches(pattern, DEVICE_INSERT) is expected


def test_every_topology_filter_is_of_the_supported_kind():
    record = {**DEVICE_INSERT, "dynamodb": {**DEVICE_INSERT["dynamodb"], "NewImage": {}}}
    for spec in topology.FUNCTIONS:
        for pattern in spec.stream_source.filters if spec.stream_source else ():
            matches(pattern, record)  # raises on a rule the local mapping cannot evaluate


class FakeFunctions:
    """Fails the records named in ``failing`` (by sequence number) a number of times."""

    def __init__(self, failing: dict[str, int], raise_on: frozenset[str] = frozenset()) -> None:
        self.failing, self.raise_on = dict(failing), set(raise_on)
        self.batches: list[list[str]] = []

    def invoke_sync(self, name: str, event: dict[str, Any]) -> Any:
        seqs = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        self.batches.append(seqs)
        if self.raise_on & set(seqs):
            raise FunctionError(name, "boom")
        failed = [s for s in seqs if self.failing.get(s, 0) > 0]
        for s in failed:
            self.failing[s] -= 1
        return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.sent.append(MessageBody)


def poller(functions: FakeFunctions, max_retries: int = 2) -> StreamPoller:
    spec = topology.function("rosters")
    assert spec.stream_source is not None
    instance = StreamPoller.__new__(StreamPoller)
    instance.functions = functions  # type: ignore[assignment]
    instance.spec = spec
    instance.source = dataclasses.replace(spec.stream_source, max_retries=max_retries)
    instance.stream_arn = "arn:stream"
    instance._sqs = FakeQueue()
    instance._queue_url = "queue"
    instance._stop = threading.Event()
    return instance


def records(*seqs: str) -> list[dict[str, Any]]:
    return [{"dynamodb": {"SequenceNumber": s}} for s in seqs]


def test_partial_failure_retries_from_the_first_failed_record():
    functions = FakeFunctions({"3": 1})
    poller(functions)._deliver(records("1", "2", "3", "4"), attempt=0)
    assert functions.batches == [["1", "2", "3", "4"], ["3", "4"]]


def test_a_raising_batch_is_bisected_and_a_poison_record_is_given_up_on():
    functions = FakeFunctions({}, raise_on=frozenset({"2"}))
    mapping = poller(functions, max_retries=1)
    mapping._deliver(records("1", "2", "3", "4"), attempt=0)
    # Halves, then the poison record alone until its retries run out; the rest go through.
    assert functions.batches[:3] == [["1", "2", "3", "4"], ["1", "2"], ["1"]]
    assert functions.batches.count(["2"]) == 2
    assert ["3", "4"] in functions.batches
    (report,) = mapping._sqs.sent
    assert '"startSequenceNumber": "2"' in report
