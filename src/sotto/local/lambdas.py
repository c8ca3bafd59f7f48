"""Runs the Lambda handlers in this process, as Lambda would run them.

Each function is imported once (its cold start) and invoked in a worker
thread with a Lambda-shaped context, so handlers block on boto3 exactly as
they do in Lambda while the gateway's event loop stays free. Each function
has its own workers, as each Lambda function scales on its own: under a
burst of messages a connect's authorizer does not queue behind them (with
one shared pool it waited past the handshake's timeout, and a client saw
the socket close without an answer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sotto import topology

from .events import ACCOUNT_ID, REGION
from .iam_trace import IamRecorder, Invocation, invoking

__all__ = ["FunctionError", "LambdaContext", "LocalFunctions"]

log = logging.getLogger("sotto.local")
Handler = Callable[[dict[str, Any], Any], Any]
# API Gateway gives up on an integration after 29 seconds.
INTEGRATION_TIMEOUT_SECONDS = 29.0
# Concurrent invocations per function (threads: the GIL shares one core among them).
WORKERS_PER_FUNCTION = 8


class FunctionError(Exception):
    """The handler raised; ``message`` is what Lambda reports as errorMessage."""

    def __init__(self, function: str, message: str) -> None:
        super().__init__(f"{function}: {message}")
        self.function = function
        self.message = message


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    deadline_ms: int = 0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


# Functions whose handler keeps the event being handled in shared state run
# one invocation at a time, as Lambda runs one event per execution
# environment, or concurrent requests would read each other's events. The
# HTTP functions share one lock: Powertools' resolvers keep ``current_event``
# on their common base class (``BaseRouter.current_event``), so in this one
# process an admin request and an enrollment would swap bodies. A stream
# function's BatchProcessor keeps its records per module. WebSocket route
# handlers keep none and run concurrently.
_HTTP_FUNCTIONS = frozenset(route.function for route in topology.HTTP_ROUTES)
_STREAM_FUNCTIONS = frozenset(
    spec.name for spec in topology.FUNCTIONS if spec.stream_source is not None
)


class LocalFunctions:
    """The functions of ``sotto.topology``, imported on first use."""

    def __init__(self, stage: str = "local", recorder: IamRecorder | None = None) -> None:
        self._stage = stage
        self._recorder = recorder
        self._handlers: dict[str, Handler] = {}
        self._workers: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        resolvers = threading.Lock()
        self._environments = {name: resolvers for name in _HTTP_FUNCTIONS} | {
            name: threading.Lock() for name in _STREAM_FUNCTIONS
        }

    def _handler(self, name: str) -> Handler:
        if name not in self._handlers:
            spec = topology.function(name)
            module = importlib.import_module(spec.module)
            self._handlers[name] = getattr(module, spec.attribute)
        return self._handlers[name]

    def invoke_sync(self, name: str, event: dict[str, Any]) -> Any:
        context = LambdaContext(
            function_name=f"sotto-{self._stage}-{name}",
            aws_request_id=str(uuid.uuid4()),
            deadline_ms=int((time.time() + INTEGRATION_TIMEOUT_SECONDS) * 1000),
        )
        # Lambda hands the handler a fresh copy of the JSON it was sent.
        event = json.loads(json.dumps(event))
        invocation = Invocation(name, str(event.get("requestContext", {}).get("routeKey", "")))
        if self._recorder is not None:
            self._recorder.invoked(invocation)
        environment = self._environments.get(name, contextlib.nullcontext())
        try:
            with environment, invoking(invocation):
                return self._handler(name)(event, context)
        except Exception as exc:
            # Lambda reports errorMessage = str(exception); the gateway maps an
            # integration error to a generic answer, never to these details.
            log.debug("function %s raised %s", name, type(exc).__name__)
            raise FunctionError(name, str(exc)) from exc

    async def invoke(self, name: str, event: dict[str, Any]) -> Any:
        workers = self._workers.get(name)
        if workers is None:
            workers = concurrent.futures.ThreadPoolExecutor(
                WORKERS_PER_FUNCTION, thread_name_prefix=f"lambda-{name}"
            )
            self._workers[name] = workers
        running = asyncio.get_running_loop().run_in_executor(workers, self.invoke_sync, name, event)
        return await asyncio.wait_for(running, INTEGRATION_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Stop every function's workers (those running finish first)."""
        for workers in self._workers.values():
            workers.shutdown(wait=False, cancel_futures=True)
        self._workers.clear()
