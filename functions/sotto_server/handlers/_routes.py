"""Running a WebSocket route: parse the frame, call the logic, answer and notify.

Notices to other devices are pushed concurrently: one slow or gone socket
does not hold up the others, and the handler's time stays within API
Gateway's 29 s integration limit for large rooms. They go after the answer,
unless the outcome says ``notices_first`` (the caller's next request must
not overtake them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ..events import MessageEvent
from ..logic.errors import Refused
from ..logic.frames import encode, refusal_frame
from ..logic.outcome import Outcome
from ..logic.principal import Principal
from ._socket import online_pushes, reply, standing_caller

__all__ = ["FANOUT_WORKERS", "Route", "run_route"]

FANOUT_WORKERS = 32
Route = tuple[type[Any], Callable[[Any, Principal, Any, int], Outcome]]
_pool = ThreadPoolExecutor(max_workers=FANOUT_WORKERS, thread_name_prefix="fanout")


def run_route(
    request: MessageEvent,
    routes: Mapping[str, Route],
    stores: Callable[[], Any],
    logger: Logger,
    metrics: Metrics,
) -> None:
    route = request.request_context.route_key
    connection_id = request.request_context.connection_id
    model, run = routes[route]
    principal = standing_caller(request)
    if principal is None:
        logger.info("refused: not in good standing", route=route)
        metrics.add_metric(name="RefusedStanding", unit=MetricUnit.Count, value=1)
        return
    from ..logic.requests import parse_frame  # pydantic: on the first frame, not at import

    try:
        parsed = parse_frame(model, request.body if isinstance(request.body, str) else None)
        outcome = run(stores(), principal, parsed, int(time.time() * 1000))
    except Refused as refused:
        logger.info("refused", route=route, code=refused.code.value)
        metrics.add_metric(name="Refused", unit=MetricUnit.Count, value=1)
        reply(connection_id, refusal_frame(refused))
        return
    if outcome.notices_first:
        _notify(outcome, metrics)
    for frame in outcome.replies:
        reply(connection_id, encode(frame))
    if not outcome.notices_first:
        _notify(outcome, metrics)
    for task in outcome.afterwards:
        task()
    metrics.add_metric(name="Answered", unit=MetricUnit.Count, value=1)


def _notify(outcome: Outcome, metrics: Metrics) -> None:
    """Push the outcome's notices to every open socket of their devices, concurrently."""
    if not outcome.notices:
        return
    encoded = [(device_id, encode(frame)) for device_id, frame in outcome.notices]
    pushes = online_pushes(encoded)
    list(_pool.map(lambda push: reply(*push), pushes))
    metrics.add_metric(name="Pushes", unit=MetricUnit.Count, value=len(pushes))
