"""``sotto local up``: the whole backend on one machine.

Starts moto (DynamoDB, S3, KMS) provisioned from ``sotto.topology``, the
@connections/HTTP API server and the WebSocket gateway, points the handlers at
them through the same environment variables Lambda gives them, and writes the
endpoints to ``DATA_DIR/endpoints.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from sotto import topology

from .aws import LOCAL_CREDENTIALS, LocalResources, MotoServer, provision
from .events import LOCAL_ADMIN_ARN
from .gateway import GatewayLimits, WebSocketGateway
from .http_server import LocalHttpServer
from .iam_trace import TRACE_FILE, IamRecorder, carry_context_into_pools
from .lambdas import LocalFunctions
from .streams import StreamPoller

__all__ = ["API_ID", "STAGE", "Endpoints", "LocalStack", "run"]

API_ID = "sottolocal"
STAGE = "local"


@dataclass(frozen=True)
class Endpoints:
    websocket: str
    http: str
    aws: str
    connections: str
    region: str
    stage: str
    api_id: str
    default_network: dict[str, str]
    resources: dict[str, dict[str, str]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


class LocalStack:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        limits: GatewayLimits | None = None,
        rate_limit_scale: float = 1.0,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.limits = limits
        self.rate_limit_scale = rate_limit_scale
        self._moto: MotoServer | None = None
        self._http: LocalHttpServer | None = None
        self._gateway: WebSocketGateway | None = None
        self._pollers: list[StreamPoller] = []

    async def start(self) -> Endpoints:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._moto = MotoServer()
        aws_endpoint = self._moto.start()
        resources = provision(aws_endpoint, STAGE)

        # What each handler asks of AWS, for the check against the template's roles.
        carry_context_into_pools()
        recorder = IamRecorder(
            self.data_dir / TRACE_FILE, _physical_tables(resources), _physical_buckets(resources)
        )
        recorder.install(boto3.DEFAULT_SESSION or _default_session())
        functions = LocalFunctions(STAGE, recorder)
        self._gateway = WebSocketGateway(
            functions, api_id=API_ID, stage=STAGE, limits=self.limits, port=self.port
        )
        self._http = LocalHttpServer(
            self._gateway, functions, asyncio.get_running_loop(), api_id=API_ID, stage=STAGE
        )
        self._http.start()
        websocket = await self._gateway.start()
        _point_handlers_at(
            aws_endpoint,
            self._http.connections_url,
            resources,
            websocket=websocket,
            rate_limit_scale=self.rate_limit_scale,
        )
        self._pollers = [
            StreamPoller(
                functions,
                spec,
                endpoint=aws_endpoint,
                table_name=resources.tables[spec.stream_source.table],
                queue_url=resources.queues[spec.stream_source.on_failure_queue],
                credentials=LOCAL_CREDENTIALS,
            )
            for spec in topology.FUNCTIONS
            if spec.stream_source is not None
        ]
        for poller in self._pollers:
            poller.start()
        network = await asyncio.to_thread(_create_default_network, resources)

        endpoints = Endpoints(
            websocket=websocket,
            http=self._http.url,
            aws=aws_endpoint,
            connections=self._http.connections_url,
            region=LOCAL_CREDENTIALS["region_name"],
            stage=STAGE,
            api_id=API_ID,
            default_network=network,
            resources={
                "tables": resources.tables,
                "buckets": resources.buckets,
                "keys": resources.keys,
                "queues": resources.queues,
            },
        )
        path = self.data_dir / "endpoints.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(endpoints.to_json())
        temporary.replace(path)  # readers never see a half-written file
        return endpoints

    async def stop(self) -> None:
        for poller in self._pollers:
            await asyncio.to_thread(poller.stop)
        if self._gateway is not None:
            await self._gateway.stop()
        if self._http is not None:
            await asyncio.to_thread(self._http.stop)
        if self._moto is not None:
            await asyncio.to_thread(self._moto.stop)
        (self.data_dir / "endpoints.json").unlink(missing_ok=True)


def _point_handlers_at(
    aws: str,
    connections: str,
    resources: LocalResources,
    *,
    websocket: str,
    rate_limit_scale: float,
) -> None:
    """Give this process the environment Lambda gives each function."""
    env: dict[str, Any] = {
        "AWS_ENDPOINT_URL": aws,
        "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": connections,
        "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": LOCAL_CREDENTIALS["region_name"],
        "AWS_REGION": LOCAL_CREDENTIALS["region_name"],
        "SOTTO_STAGE": STAGE,
        "SOTTO_WEBSOCKET_URL": websocket,
        "SOTTO_WS_AUDIENCE": f"{API_ID}/{STAGE}",
        "SOTTO_RATE_LIMIT_SCALE": str(rate_limit_scale),
        # The local stage admits the local credentials' caller, and only it.
        "SOTTO_ADMIN_PRINCIPALS": LOCAL_ADMIN_ARN,
        "POWERTOOLS_SERVICE_NAME": "sotto",
        "POWERTOOLS_METRICS_NAMESPACE": "Sotto",
        **resources.environment(),
    }
    os.environ.update({name: str(value) for name, value in env.items()})
    # Credentials from a profile or session token would override the above.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)


def _default_session() -> boto3.session.Session:
    """The session behind the handlers' ``boto3.client(...)`` calls."""
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    return boto3.DEFAULT_SESSION


def _physical_buckets(resources: LocalResources) -> dict[str, tuple[str, str]]:
    keys = {spec.logical_id: spec.kms_key for spec in topology.BUCKETS}
    return {physical: (logical, keys[logical]) for logical, physical in resources.buckets.items()}


def _physical_tables(resources: LocalResources) -> dict[str, str]:
    return {physical: logical for logical, physical in resources.tables.items()}


def _create_default_network(resources: LocalResources) -> dict[str, str]:
    """Every start is a first start (moto keeps state in memory): make a network to invite into."""
    from sotto_server.dal.directory import DirectoryStore, Network

    # A session of its own: the default one is the handlers', and traced as theirs.
    client = boto3.session.Session().client("dynamodb")  # the environment points it at moto
    network = Network(f"net-{secrets.token_hex(6)}", "Local", int(time.time() * 1000))
    DirectoryStore(client, resources.tables["DirectoryTable"]).create_network(network)
    return {"network_id": network.network_id, "name": network.name}


def run(
    data_dir: Path,
    port: int = 0,
    limits: GatewayLimits | None = None,
    rate_limit_scale: float = 1.0,
) -> int:
    """Run until Ctrl-C or SIGTERM; print the endpoints and what to do next."""

    async def main() -> None:
        stack = LocalStack(data_dir, port=port, limits=limits, rate_limit_scale=rate_limit_scale)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        endpoints = await stack.start()
        network = endpoints.default_network["network_id"]
        server = shlex.quote(str(data_dir))
        print(
            "Sotto local stack is up\n"
            f"  websocket  {endpoints.websocket}\n"
            f"  http api   {endpoints.http}\n"
            f"  aws (moto) {endpoints.aws}\n"
            f"  endpoints  {data_dir / 'endpoints.json'}\n"
            f"  network    Local ({network})\n"
            "\n"
            "Next, in another terminal (repeat the first two for bob):\n"
            f"  sotto admin --server {server} invite {network} alice\n"
            f"  sotto enroll --server {server} --code CODE --profile alice\n"
            "  sotto contacts add bob BOB_USER_ID --profile alice\n"
            "  sotto send bob 'hello' --profile alice\n"
            "  sotto listen --profile bob\n"
            "\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        try:
            await stopping.wait()
        finally:
            print("stopping...", file=sys.stderr, flush=True)
            await stack.stop()

    asyncio.run(main())
    return 0
