"""Public HTTP: enrollment with an invite code and new-device link requests (docs/api.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from sotto.frames.requests import EnrollLookupRequest, EnrollRequest, LinkRequest, LinkStatusRequest

from ..logic import enrollment
from ..logic.errors import Refused
from ..logic.frames import encode
from ..logic.requests import parse_body
from ._http import json_body, refused_response, source_ip
from ._socket import notify_device
from ._stores import stores

if TYPE_CHECKING:
    from sotto.frames.answers_devices import LinkRequestedPush
    from sotto.frames.answers_http import (
        EnrolledAnswer,
        EnrollLookupAnswer,
        LinkRequestAnswer,
        LinkStatusAnswer,
    )

logger = Logger()
app = APIGatewayHttpResolver()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _refused(refused: Refused) -> Response[str]:
    logger.info("refused", code=refused.code.value, reason=refused.log_detail or refused.message)
    return refused_response(refused)


@app.post("/v1/enroll/lookup")
def lookup() -> EnrollLookupAnswer:
    request = parse_body(EnrollLookupRequest, json_body(app))
    return enrollment.lookup(stores(), request, source_ip(app), _now_ms())


@app.post("/v1/enroll")
def enroll() -> EnrolledAnswer:
    request = parse_body(EnrollRequest, json_body(app))
    answer = enrollment.enroll(stores(), request, source_ip(app), _now_ms())
    logger.info("enrolled", user_id=answer["user_id"], device_id=answer["device_id"])
    return answer


@app.post("/v1/link/requests")
def link_request() -> LinkRequestAnswer:
    request = parse_body(LinkRequest, json_body(app))
    answer, link = enrollment.link_request(stores(), request, source_ip(app), _now_ms())
    # Tell the device that created the link, so it can show the new device at once.
    push: LinkRequestedPush = {"action": "link_requested", "link_id": link.link_id}
    notify_device(link.created_by, encode(push))
    return answer


@app.post("/v1/link/status")
def link_status() -> LinkStatusAnswer:
    request = parse_body(LinkStatusRequest, json_body(app))
    return enrollment.link_status(stores(), request, source_ip(app), _now_ms())


app.exception_handler(Refused)(_refused)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
