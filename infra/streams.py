"""Stream consumers: SQS queues and the DynamoDB stream event sources of ``topology``.

Each function with a ``stream_source`` gets a Lambda event source mapping on
its table's stream with the topology's filters, partial batch responses,
bisect on error, bounded retries and an on-failure destination queue; the
local stack runs the same mapping (``sotto.local.streams``). The mapping is
written as the L1 resource with grants stated here, rather than CDK's event
source helpers, whose grants include wildcard KMS actions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra._common import construct_name
from infra._nag import acknowledge
from infra.settings import Settings
from sotto import topology

__all__ = ["Queues", "StreamSources", "stream_statements"]


class Queues(Construct):
    """The queues of ``topology.QUEUES``, encrypted with the data key."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.by_id: dict[str, sqs.Queue] = {
            spec.logical_id: self._build_queue(spec, settings, key) for spec in topology.QUEUES
        }

    def _build_queue(
        self, spec: topology.QueueSpec, settings: Settings, key: kms.IKey
    ) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            spec.logical_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(spec.retention_days),
            removal_policy=RemovalPolicy.RETAIN if settings.is_prod else RemovalPolicy.DESTROY,
        )
        reason = (
            "This queue is itself the failure destination of a stream event source: an "
            "operator reads what failed from it; nothing consumes it automatically."
        )
        acknowledge(queue, "AwsSolutions-SQS3", reason)
        acknowledge(queue, "Serverless-SQSRedrivePolicy", reason)
        return queue


def stream_statements(
    source: topology.StreamSourceSpec,
    tables: Mapping[str, dynamodb.ITable],
    queues: Mapping[str, sqs.IQueue],
) -> list[iam.PolicyStatement]:
    """What a stream-fed function's role needs: read its stream, report failures.

    The failure queue is encrypted with the data key, which such a function
    already uses (``UseDataKey``: it writes tables).
    """
    stream_arn = tables[source.table].table_stream_arn
    if stream_arn is None:
        raise ValueError(f"{source.table} has no stream")
    queue = queues[source.on_failure_queue]
    return [
        iam.PolicyStatement(
            sid="ReadOwnStream",
            actions=[
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            resources=[stream_arn],
        ),
        iam.PolicyStatement(
            sid="ReportFailures", actions=["sqs:SendMessage"], resources=[queue.queue_arn]
        ),
    ]


class StreamSources(Construct):
    """One event source mapping per function with a ``stream_source``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        tables: Mapping[str, dynamodb.ITable],
        queues: Mapping[str, sqs.IQueue],
        functions: Mapping[str, lambda_.Function],
    ) -> None:
        super().__init__(scope, construct_id)
        for spec in topology.FUNCTIONS:
            source = spec.stream_source
            if source is None:
                continue
            lambda_.CfnEventSourceMapping(
                self,
                f"{construct_name(spec.name)}StreamSource",
                function_name=functions[spec.name].function_name,
                event_source_arn=tables[source.table].table_stream_arn,
                starting_position="TRIM_HORIZON",
                batch_size=source.batch_size,
                maximum_batching_window_in_seconds=source.batching_window_s,
                bisect_batch_on_function_error=source.bisect_on_error,
                maximum_retry_attempts=source.max_retries,
                function_response_types=["ReportBatchItemFailures"],
                destination_config=lambda_.CfnEventSourceMapping.DestinationConfigProperty(
                    on_failure=lambda_.CfnEventSourceMapping.OnFailureProperty(
                        destination=queues[source.on_failure_queue].queue_arn
                    )
                ),
                filter_criteria=lambda_.CfnEventSourceMapping.FilterCriteriaProperty(
                    filters=[
                        lambda_.CfnEventSourceMapping.FilterProperty(pattern=json.dumps(f))
                        for f in source.filters
                    ]
                ),
            )
