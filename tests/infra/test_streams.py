"""Stream event sources: what topology declares is what deploys, with the grants it needs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sotto import topology

from .conftest import Synthesized
from .test_functions import _function, _statements

pytestmark = pytest.mark.synth

STREAM_FED = [spec for spec in topology.FUNCTIONS if spec.stream_source is not None]


def _mapping(synth: Synthesized, spec: topology.FunctionSpec) -> dict[str, Any]:
    function_id = synth.logical_id(synth.stack.functions[spec.name])
    found: list[dict[str, Any]] = [
        r["Properties"]
        for r in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if r["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    (mapping,) = found
    return mapping


@pytest.mark.parametrize("spec", STREAM_FED, ids=[s.name for s in STREAM_FED])
def test_event_source_mapping_is_the_topology_s(synth: Synthesized, spec: topology.FunctionSpec):
    source = spec.stream_source
    assert source is not None
    mapping = _mapping(synth, spec)
    table_id = synth.logical_id(synth.stack.tables[source.table])
    queue_id = synth.logical_id(synth.stack.queues.by_id[source.on_failure_queue])
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["BatchSize"] == source.batch_size
    assert mapping["BisectBatchOnFunctionError"] is source.bisect_on_error
    assert mapping["MaximumRetryAttempts"] == source.max_retries
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}
    }
    patterns = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert patterns == list(source.filters)


@pytest.mark.parametrize("spec", STREAM_FED, ids=[s.name for s in STREAM_FED])
def test_stream_reader_reads_only_its_own_stream(synth: Synthesized, spec: topology.FunctionSpec):
    source = spec.stream_source
    assert source is not None
    table_id = synth.logical_id(synth.stack.tables[source.table])
    (read,) = [s for s in _statements(synth, spec) if s.get("Sid") == "ReadOwnStream"]
    assert read["Resource"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
    (report,) = [s for s in _statements(synth, spec) if s.get("Sid") == "ReportFailures"]
    queue_id = synth.logical_id(synth.stack.queues.by_id[source.on_failure_queue])
    assert report["Action"] == "sqs:SendMessage"
    assert report["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert _function(synth, spec)["Timeout"] == spec.timeout_seconds


def test_failure_queues_are_encrypted_with_the_data_key(synth: Synthesized):
    key_id = synth.logical_id(synth.stack.keys["DataKey"])
    for queue in synth.of_type("AWS::SQS::Queue").values():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
