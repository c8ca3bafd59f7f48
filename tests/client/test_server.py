"""--server resolution: HTTP API URL (via /v1/info), local data dir, endpoints.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sotto.client.errors import ServerResolutionError
from sotto.client.server import ServerConfig, resolve_server

ENDPOINTS = {
    "websocket": "ws://127.0.0.1:4000",
    "http": "http://127.0.0.1:4001",
    "aws": "http://127.0.0.1:4002",
    "connections": "http://127.0.0.1:4001/local/@connections",
    "region": "us-east-1",
    "stage": "local",
    "api_id": "sottolocal",
}


def no_info(url: str) -> dict[str, Any]:
    raise AssertionError(f"fetched {url}")


def fixed_info(**info: Any) -> Any:
    seen: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        seen.append(url)
        return info

    fetch.seen = seen  # type: ignore[attr-defined]
    return fetch


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "endpoints.json").write_text(json.dumps(ENDPOINTS))
    return tmp_path


def test_local_data_dir_resolves_from_its_endpoints_file(data_dir: Path) -> None:
    server = resolve_server(str(data_dir), no_info)
    assert server == ServerConfig(
        http="http://127.0.0.1:4001",
        websocket="ws://127.0.0.1:4000",
        audience="sottolocal/local",
        region="us-east-1",
        local=True,
    )


def test_endpoints_file_path_resolves_like_its_directory(data_dir: Path) -> None:
    assert resolve_server(str(data_dir / "endpoints.json"), no_info) == resolve_server(
        str(data_dir), no_info
    )


def test_http_url_asks_the_server_where_its_websocket_is() -> None:
    fetch = fixed_info(
        websocket="wss://abc.execute-api.eu-west-2.amazonaws.com/prod", audience="abc/prod"
    )
    server = resolve_server("https://xyz123.execute-api.eu-west-2.amazonaws.com/", fetch)
    assert fetch.seen == ["https://xyz123.execute-api.eu-west-2.amazonaws.com"]
    assert server.websocket == "wss://abc.execute-api.eu-west-2.amazonaws.com/prod"
    assert server.audience == "abc/prod"
    assert server.region == "eu-west-2"  # SigV4 needs it; read from the execute-api host
    assert not server.local


def test_http_url_on_a_custom_domain_leaves_the_region_to_the_aws_config() -> None:
    server = resolve_server(
        "https://chat.example.gov", fixed_info(websocket="wss://ws.example.gov", audience="a/b")
    )
    assert server.region is None


def test_server_info_without_websocket_is_not_a_sotto_server() -> None:
    with pytest.raises(ServerResolutionError, match="Sotto server"):
        resolve_server("https://example.com", fixed_info(service="something"))


def test_missing_local_stack_says_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(ServerResolutionError, match="sotto local up"):
        resolve_server(str(tmp_path), no_info)


def test_damaged_endpoints_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text('{"http": "http://x"}')
    with pytest.raises(ServerResolutionError, match="lacks"):
        resolve_server(str(tmp_path), no_info)


@pytest.mark.parametrize("spec", ["ws://127.0.0.1:4000", "ftp://example.com", "/no/such/place", ""])
def test_other_server_specs_are_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(ServerResolutionError):
        resolve_server(spec, no_info)


def test_server_config_survives_the_profile_round_trip(data_dir: Path) -> None:
    server = resolve_server(str(data_dir), no_info)
    assert ServerConfig.from_json(json.loads(json.dumps(server.to_json()))) == server
