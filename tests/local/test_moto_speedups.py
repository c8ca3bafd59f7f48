"""``fast_moto`` changes what moto costs, never what it answers.

Each answer is compared with moto's own, item types of every kind, over a
moto server like the local stack's, with the speedups switched on and off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import boto3
import pytest

from sotto.local.aws import MotoServer
from sotto.local.moto_speedups import fast_moto

TABLE = "Things"
ITEM: dict[str, Any] = {
    "pk": {"S": "P#1"},
    "sk": {"S": "S#1"},
    "text": {"S": "zürich ✓"},
    "total": {"N": "12345678901234567890"},
    "blob": {"B": bytes(range(256))},
    "empty_blob": {"B": b""},
    "names": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [b"\x00\x01", b"\xff"]},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "nested": {
        "M": {
            "inner": {"L": [{"S": "x"}, {"B": b"\x10"}, {"M": {"deep": {"N": "1"}}}]},
            "empty": {"M": {}},
            "list": {"L": []},
        }
    },
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = MotoServer(speedups=False)
    try:
        yield server.start()
    finally:
        server.stop()


def _client(service: Literal["dynamodb", "dynamodbstreams"], endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def dynamodb(endpoint: str) -> Iterator[Any]:
    client = _client("dynamodb", endpoint)
    client.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    client.put_item(TableName=TABLE, Item=ITEM)
    client.put_item(TableName=TABLE, Item={**ITEM, "sk": {"S": "S#2"}})
    yield client
    client.delete_table(TableName=TABLE)


def _answers(client: Any) -> dict[str, Any]:
    key = {"pk": ITEM["pk"], "sk": ITEM["sk"]}
    reads: dict[str, Callable[[], Any]] = {
        "get": lambda: client.get_item(TableName=TABLE, Key=key),
        "projected": lambda: client.get_item(
            TableName=TABLE,
            Key=key,
            ProjectionExpression="#b, nested.inner",
            ExpressionAttributeNames={"#b": "blob"},
        ),
        "batch": lambda: client.batch_get_item(
            RequestItems={TABLE: {"Keys": [key, {**key, "sk": {"S": "S#2"}}]}}
        ),
        "query": lambda: client.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": ITEM["pk"]},
        ),
        "scan": lambda: client.scan(TableName=TABLE),
        "transact_get": lambda: client.transact_get_items(
            TransactItems=[{"Get": {"TableName": TABLE, "Key": key}}]
        ),
        "update": lambda: client.update_item(
            TableName=TABLE,
            Key=key,
            UpdateExpression="SET flag = :f",  # the value it has: both runs read the same
            ExpressionAttributeValues={":f": {"BOOL": False}},
            ReturnValues="ALL_NEW",
        ),
    }
    answers = {}
    for name, read in reads.items():
        answer = read()
        answer.pop("ResponseMetadata")
        answers[name] = answer
    return answers


def _stream_records(client: Any) -> list[dict[str, Any]]:
    streams = _client("dynamodbstreams", client.meta.endpoint_url)
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = streams.get_records(ShardIterator=iterator)["Records"]
    return [r["dynamodb"] for r in records]


def test_answers_are_moto_own(dynamodb: Any) -> None:
    plain = _answers(dynamodb)
    with fast_moto():
        fast = _answers(dynamodb)
    assert fast == plain
    assert fast["get"]["Item"] == ITEM  # what was written, byte for byte


def test_stream_records_are_moto_own(dynamodb: Any) -> None:
    plain = _stream_records(dynamodb)
    with fast_moto():
        fast = _stream_records(dynamodb)
    assert fast == plain
    assert fast[0]["NewImage"] == ITEM


def test_a_cancelled_transaction_leaves_items_and_stream_as_they_were(dynamodb: Any) -> None:
    before = _stream_records(dynamodb)
    key = {"pk": ITEM["pk"], "sk": ITEM["sk"]}
    with fast_moto(), pytest.raises(dynamodb.exceptions.TransactionCanceledException):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {**ITEM, "sk": {"S": "S#3"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": key,
                        "UpdateExpression": "SET flag = :t",
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ExpressionAttributeValues": {":t": {"BOOL": True}},
                    }
                },
            ]
        )
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key={**key, "sk": {"S": "S#3"}})
    assert dynamodb.get_item(TableName=TABLE, Key=key)["Item"] == ITEM
    assert _stream_records(dynamodb) == before


def test_the_speedups_are_undone_on_exit() -> None:
    from moto.core.serialize import BaseJSONSerializer
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    saved = (
        vars(BaseJSONSerializer).get("_serialize"),
        DynamoDBBackend.transact_write_items,
        Table.query,
    )
    with fast_moto():
        assert DynamoDBBackend.transact_write_items is not saved[1]
    assert (
        vars(BaseJSONSerializer).get("_serialize"),
        DynamoDBBackend.transact_write_items,
        Table.query,
    ) == saved
