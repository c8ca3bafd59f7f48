"""Where a Sotto deployment is: its HTTP API, WebSocket URL and token audience.

``--server`` accepts either the deployment's HTTP API URL (then ``GET /v1/info``
names the WebSocket URL and the audience), or, for the local stack, its data
directory or the ``endpoints.json`` inside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import MalformedFrame, ServerResolutionError

__all__ = ["ServerConfig", "from_endpoints", "resolve_server"]

_AUDIENCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}/[A-Za-z0-9_.-]{1,64}$")
# execute-api hosts name their region: {api}.execute-api.{region}.amazonaws.com
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")


@dataclass(frozen=True)
class ServerConfig:
    """A resolved deployment; stored in each profile so later commands need no --server."""

    http: str
    websocket: str
    audience: str
    region: str | None = None
    # The local stack accepts only its fixed local credentials for admin calls.
    local: bool = False

    def __post_init__(self) -> None:
        if urlsplit(self.http).scheme not in ("http", "https"):
            raise ServerResolutionError(f"HTTP API URL must be http(s): {self.http!r}")
        if urlsplit(self.websocket).scheme not in ("ws", "wss"):
            raise ServerResolutionError(f"WebSocket URL must be ws(s): {self.websocket!r}")
        if not _AUDIENCE.match(self.audience):
            raise ServerResolutionError(f"audience must be API_ID/STAGE: {self.audience!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerConfig:
        try:
            return cls(
                http=str(data["http"]),
                websocket=str(data["websocket"]),
                audience=str(data["audience"]),
                region=None if data.get("region") is None else str(data["region"]),
                local=bool(data.get("local", False)),
            )
        except KeyError as exc:
            raise ServerResolutionError(f"server settings lack {exc.args[0]!r}") from None


def from_endpoints(path: Path) -> ServerConfig:
    """The local stack's ``endpoints.json`` (written by ``sotto local up``)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServerResolutionError(
            f"no {path}: is the local stack running (sotto local up)?"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServerResolutionError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ServerResolutionError(f"{path} is not an endpoints file")
    missing = [k for k in ("websocket", "http", "api_id", "stage") if k not in data]
    if missing:
        raise ServerResolutionError(f"{path} lacks {', '.join(missing)}")
    return ServerConfig(
        http=str(data["http"]).rstrip("/"),
        websocket=str(data["websocket"]),
        audience=f"{data['api_id']}/{data['stage']}",
        region=str(data.get("region") or "us-east-1"),
        local=True,
    )


InfoFetcher = Callable[[str], Mapping[str, Any]]


def resolve_server(spec: str, fetch_info: InfoFetcher) -> ServerConfig:
    """Resolve ``--server``; ``fetch_info(http_url)`` returns ``GET /v1/info``'s body."""
    if not spec:
        raise ServerResolutionError("--server is empty")
    scheme = urlsplit(spec).scheme
    if scheme in ("http", "https"):
        return _from_info(spec.rstrip("/"), fetch_info)
    if scheme in ("ws", "wss"):
        raise ServerResolutionError(
            "--server takes the HTTP API URL (or the local data dir), not the WebSocket URL"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return from_endpoints(path / "endpoints.json")
    if path.suffix == ".json" or path.is_file():
        return from_endpoints(path)
    raise ServerResolutionError(
        f"--server {spec!r} is neither an http(s) URL nor a local stack directory"
    )


def _from_info(http: str, fetch_info: InfoFetcher) -> ServerConfig:
    try:
        info = fetch_info(http)
    except MalformedFrame:  # not of the info shape (sotto.frames.answers_http.InfoAnswer)
        info = {}
    websocket, audience = info.get("websocket"), info.get("audience")
    if not isinstance(websocket, str) or not isinstance(audience, str):
        raise ServerResolutionError(
            f"{http}/v1/info does not name a websocket and audience; is this a Sotto server?"
        )
    match = _EXECUTE_API_HOST.match(urlsplit(http).hostname or "")
    return ServerConfig(
        http=http, websocket=websocket, audience=audience, region=match[1] if match else None
    )
