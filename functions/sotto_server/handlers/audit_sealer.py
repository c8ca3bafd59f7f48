"""Scheduled: seal every network's new audit entries into the archive (Object Lock).

EventBridge invokes it on its schedule (topology: ``audit_sealer``); the
local stack runs it on demand (``POST /<stage>/@schedules/audit_sealer``).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws import s3_client
from ..logic.audit_seal import seal_all
from ._audit import audit_store

logger = Logger()


def _put_object(key: str, data: bytes) -> None:
    # The bucket's default retention locks it; its default encryption is the archive key.
    s3_client().put_object(
        Bucket=os.environ["SOTTO_ARCHIVE_BUCKET"],
        Key=key,
        Body=data,
        ContentType="application/x-ndjson",
        ChecksumAlgorithm="SHA256",
    )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = seal_all(audit_store(), _put_object)
    for segment in result["sealed"]:
        logger.info("audit sealed", **segment)
    return result
