"""Recording audit events from a handler: the audit table and the audit bus, from the environment.

``audit(event)`` is what every handler calls after an administrative or
security-relevant action. The action has happened by then: a failure to
record is logged as an error (an operator's alarm) and never turns a done
action into an error answer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from sotto import topology

from ..aws import dynamodb_client, events_client
from ..config import settings
from ..dal.audit import AuditStore, StoredEntry
from ..logic.audit import Actor, AuditEvent, record

__all__ = ["Actor", "AuditEvent", "audit", "audit_store"]

logger = Logger(child=True)
DETAIL_TYPE = "Sotto audit event"


def audit_store() -> AuditStore:
    return AuditStore(dynamodb_client(), settings().table_name("AuditTable"))


def _publish(entry: StoredEntry, fields: Mapping[str, Any]) -> None:
    bus = os.environ.get(topology.AUDIT_BUS.env_var, "")
    if not bus:
        logger.error("no audit bus configured; event not published", seq=entry.seq)
        return
    detail = {**fields, "hash": entry.hash}
    try:
        answer = events_client().put_events(
            Entries=[
                {
                    "Source": topology.AUDIT_EVENT_SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps(detail, sort_keys=True),
                    "EventBusName": bus,
                    "Resources": [],
                }
            ]
        )
    except (BotoCoreError, ClientError) as error:
        logger.error("audit event not published", seq=entry.seq, error=type(error).__name__)
        return
    if answer.get("FailedEntryCount"):
        logger.error("audit event not published", seq=entry.seq, network_id=entry.network_id)


def audit(event: AuditEvent) -> StoredEntry | None:
    """Record ``event`` in its network's chain and publish it; None if it could not be recorded."""
    try:
        return record(audit_store(), event, int(time.time() * 1000), publish=_publish)
    except (BotoCoreError, ClientError, RuntimeError) as error:
        logger.error(
            "audit event not recorded",
            audit_event=event.event,
            network_id=event.network_id,
            error=type(error).__name__,
        )
        return None
