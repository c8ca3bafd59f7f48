"""JSON over HTTP(S) with timeouts; admin calls SigV4-signed for ``execute-api``.

Every error answer becomes an ``ApiError(status, code, message)``: the
documented ``{"code", "message"}`` body when the server sent one, otherwise a
code derived from the status (API Gateway's own refusals carry only
``{"message"}``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import sotto

from .errors import ApiError, ClientError, TransportError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LOCAL_CREDENTIALS",
    "HttpClient",
    "SigV4Signer",
    "path_segment",
]

DEFAULT_TIMEOUT_S = 15.0
# Answers are small JSON; a bigger body is a misdirected request, not data.
MAX_RESPONSE_BYTES = 1024 * 1024
# The local stack checks only the shape of a SigV4 signature; these are its fixed keys.
LOCAL_CREDENTIALS = ("AKIALOCALSOTTO000000", "local-secret-not-a-real-key")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


def path_segment(value: str) -> str:
    """One URL path segment; ids are validated by the server, quoting keeps them one segment."""
    return quote(value, safe="")


class SigV4Signer:
    """Signs requests for API Gateway's IAM authorization (service ``execute-api``)."""

    def __init__(self, region: str | None, *, local: bool = False) -> None:
        # Imported here: botocore is heavy and only admin calls need it.
        from botocore.credentials import Credentials
        from botocore.session import get_session

        if local:
            self._credentials: Any = Credentials(*LOCAL_CREDENTIALS)
            self._region = region or "us-east-1"
            return
        session = get_session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ClientError(
                "no AWS credentials found: configure them as for the AWS CLI "
                "(environment, ~/.aws, SSO or an instance role); for the local stack, "
                "pass its data dir or endpoints.json as --server"
            )
        self._credentials = credentials
        region = region or session.get_config_variable("region")
        if not region:
            raise ClientError("no AWS region: set AWS_REGION or configure a default region")
        self._region = str(region)

    def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(
            method=method, url=url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(self._credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(
            request
        )
        return {str(k): str(v) for k, v in request.headers.items()}


class HttpClient:
    """Calls one HTTP API base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        signer: SigV4Signer | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._signer = signer
        self._timeout = timeout
        # Loopback (the local stack) never goes through a proxy from the environment.
        handlers: list[urllib.request.BaseHandler] = []
        if parts.hostname in ("127.0.0.1", "localhost", "::1"):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", path, {} if body is None else body)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Accept": "application/json",
            "User-Agent": f"sotto/{sotto.__version__}",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._signer is not None:
            headers.update(self._signer.headers(method, url, data))
        # The scheme was checked in __init__ (http or https only): no file: or custom schemes.
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            with error:
                raise _api_error(error) from None
        except urllib.error.URLError as error:
            raise TransportError(f"cannot reach {self.base_url}: {error.reason}") from None
        except TimeoutError:
            raise TransportError(
                f"{self.base_url} did not answer within {self._timeout:g} s"
            ) from None
        except OSError as error:
            raise TransportError(f"cannot reach {self.base_url}: {error}") from None
        return _json_object(raw, url)


def _json_object(raw: bytes, url: str) -> dict[str, Any]:
    if len(raw) > MAX_RESPONSE_BYTES:
        raise TransportError(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        value = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TransportError(f"{url} did not answer JSON; is this a Sotto server?") from None
    if not isinstance(value, dict):
        raise TransportError(f"{url} answered JSON that is not an object")
    return value


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    status = error.code
    try:
        body = json.loads(error.read(MAX_RESPONSE_BYTES) or b"{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    if not isinstance(code, str):
        code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "http_error")
    message = body.get("message")
    if not isinstance(message, str) or not message:
        message = str(error.reason or "no message")
    retry = body.get("retry_after_s", error.headers.get("Retry-After") if error.headers else None)
    try:
        retry_after = None if retry is None else float(retry)
    except (TypeError, ValueError):
        retry_after = None
    return ApiError(status, code, message, retry_after_s=retry_after)
