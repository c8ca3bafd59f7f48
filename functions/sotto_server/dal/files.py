"""File records in the messages table: one per uploaded (or uploading) object.

    pk                  sk     item
    FILE#<object_id>    FILE   conversation, network, uploader, S3 upload id, size,
                               part size and count, state, the message that refers to it

The record lives in the messages table (``dal/conversations.py`` owns the
conversation items; this module owns only ``FILE#`` items) so a message and
the record of its file commit in one transaction. Its TTL is the object's
life: a day while it is uploading or waiting for its message, then the
message's end (expiry, or burn-on-read once first read). When TTL (or an
abort) removes the record, the ``attachments`` function deletes the object:
the record's key names it, which is all a REMOVE stream record carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import ClientError

from ._single_table import Item, SingleTableStore, error_code, key, number

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

__all__ = ["FileRecord", "FilesStore", "object_key", "object_of_record"]

FileState = Literal["uploading", "complete", "attached"]
RECORD_PREFIX = "FILE#"
# Object keys are the random object id under a fixed prefix: no names, no ids of people.
OBJECT_PREFIX = "f/"


def object_key(object_id: str) -> str:
    return f"{OBJECT_PREFIX}{object_id}"


def object_of_record(pk: str) -> str | None:
    """The object key a removed record's partition key names (None: not a file record)."""
    if not pk.startswith(RECORD_PREFIX):
        return None
    return object_key(pk.removeprefix(RECORD_PREFIX))


@dataclass(frozen=True)
class FileRecord:
    object_id: str
    conversation_id: str
    network_id: str
    uploader_user: str
    uploader_device: str
    upload_id: str  # S3's multipart upload id
    size: int  # bytes of the encrypted stream
    part_size: int
    part_count: int
    created_at: int  # ms
    state: FileState
    message_id: str = ""  # hex, once attached

    @property
    def key(self) -> str:
        return object_key(self.object_id)


def _record(item: Item) -> FileRecord:
    state: FileState
    match item["state"]["S"]:
        case "uploading" | "complete" | "attached" as known:
            state = known
        case other:
            raise ValueError(f"file record in unknown state {other!r}")
    return FileRecord(
        object_id=item["pk"]["S"].removeprefix(RECORD_PREFIX),
        conversation_id=item["conversation_id"]["S"],
        network_id=item["network_id"]["S"],
        uploader_user=item["uploader_user"]["S"],
        uploader_device=item["uploader_device"]["S"],
        upload_id=item["upload_id"]["S"],
        size=int(item["size"]["N"]),
        part_size=int(item["part_size"]["N"]),
        part_count=int(item["part_count"]["N"]),
        created_at=int(item["created_at"]["N"]),
        state=state,
        message_id=item.get("message_id", {}).get("S", ""),
    )


class FilesStore(SingleTableStore):
    def get(self, object_id: str) -> FileRecord | None:
        item = self._get(f"{RECORD_PREFIX}{object_id}", "FILE")
        return None if item is None else _record(item)

    def create(self, record: FileRecord, expires_at_s: int) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={
                **key(f"{RECORD_PREFIX}{record.object_id}", "FILE"),
                "conversation_id": {"S": record.conversation_id},
                "network_id": {"S": record.network_id},
                "uploader_user": {"S": record.uploader_user},
                "uploader_device": {"S": record.uploader_device},
                "upload_id": {"S": record.upload_id},
                "size": number(record.size),
                "part_size": number(record.part_size),
                "part_count": number(record.part_count),
                "created_at": number(record.created_at),
                "state": {"S": record.state},
                "expires_at": number(expires_at_s),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def mark_complete(self, object_id: str) -> bool:
        """uploading -> complete; False if it was not uploading (a repeat, or gone)."""
        return self._update(
            object_id,
            "SET #state = :complete",
            "#state = :uploading",
            {":complete": {"S": "complete"}, ":uploading": {"S": "uploading"}},
        )

    def delete(self, object_id: str, device_id: str) -> bool:
        """Forget an upload that no message refers to; its object goes through the stream."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=key(f"{RECORD_PREFIX}{object_id}", "FILE"),
                ConditionExpression="uploader_device = :device AND #state <> :attached",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":device": {"S": device_id},
                    ":attached": {"S": "attached"},
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def attach_item(
        self, object_id: str, cid: str, device_id: str, message_id: str, ends_s: int
    ) -> TransactWriteItemTypeDef:
        """The transaction item that ties a complete upload to the message sending it.

        Only the uploading device, only in the upload's conversation, only
        once: the record then lives exactly as long as the message.
        """
        return {
            "Update": {
                "TableName": self._table,
                "Key": key(f"{RECORD_PREFIX}{object_id}", "FILE"),
                "UpdateExpression": "SET #state = :attached, message_id = :mid, expires_at = :ttl",
                "ConditionExpression": (
                    "#state = :complete AND uploader_device = :device AND conversation_id = :cid"
                ),
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": {
                    ":attached": {"S": "attached"},
                    ":complete": {"S": "complete"},
                    ":mid": {"S": message_id},
                    ":ttl": number(ends_s),
                    ":device": {"S": device_id},
                    ":cid": {"S": cid},
                },
            }
        }

    def end_at(self, object_id: str, deadline_ms: int) -> None:
        """Bring an attached file's end forward with its message's (burn-on-read)."""
        ttl = deadline_ms // 1000 + 1
        self._update(
            object_id,
            "SET expires_at = :ttl",
            "#state = :attached AND expires_at > :ttl",
            {":ttl": number(ttl), ":attached": {"S": "attached"}},
        )

    def _update(
        self, object_id: str, update: str, condition: str, values: dict[str, object]
    ) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"{RECORD_PREFIX}{object_id}", "FILE"),
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(pk) AND {condition}",
                ExpressionAttributeNames={"#state": "state"},  # every condition names it
                ExpressionAttributeValues=values,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True
