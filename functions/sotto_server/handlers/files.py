"""File routes (docs/api.md, Files): policy, upload start/parts/complete/abort, download."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ._routes import Route, run_route
from ._stores import file_stores

logger = Logger()
metrics = Metrics()


@cache
def routes() -> dict[str, Route]:
    """The route table, imported on the first frame (cold start, as messages.py)."""
    from sotto.frames.requests import (
        FileDownloadRequest,
        FilePolicyRequest,
        FileUploadAbortRequest,
        FileUploadCompleteRequest,
        FileUploadPartsRequest,
        FileUploadStartRequest,
    )

    from ..logic import files as logic

    return {
        "file_policy": (FilePolicyRequest, logic.policy),
        "file_upload_start": (FileUploadStartRequest, logic.start),
        "file_upload_parts": (FileUploadPartsRequest, logic.parts),
        "file_upload_complete": (FileUploadCompleteRequest, logic.complete),
        "file_upload_abort": (FileUploadAbortRequest, logic.abort),
        "file_download": (FileDownloadRequest, logic.download),
    }


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), routes(), file_stores, logger, metrics)
    return {"statusCode": 200}
