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
from urllib.parse import urlsplit

import boto3

from sotto import topology

from .aws import LOCAL_CREDENTIALS, LocalResources, MotoServer, provision
from .event_bus import EVENTS_FILE, EventBusRecorder
from .events import LOCAL_ADMIN_ARN
from .gateway import GatewayLimits, WebSocketGateway
from .http_server import LocalHttpServer
from .iam_trace import TRACE_FILE, IamRecorder, carry_context_into_pools
from .lambdas import LocalFunctions
from .state import STATE_FILE, SavedState, StateError
from .state import load as load_state
from .state import save as save_state
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
        persist: bool = True,
        fresh: bool = False,
        save_every_s: float = 30.0,
        verbose: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.limits = limits
        self.rate_limit_scale = rate_limit_scale
        self.persist = persist
        self.fresh = fresh
        self.save_every_s = save_every_s
        self.verbose = verbose
        self.restored = False
        self._saved: SavedState | None = None
        self._saver: asyncio.Task[None] | None = None
        self._moto: MotoServer | None = None
        self._http: LocalHttpServer | None = None
        self._gateway: WebSocketGateway | None = None
        self._functions: LocalFunctions | None = None
        self._pollers: list[StreamPoller] = []

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    async def start(self) -> Endpoints:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.fresh:
            self.state_path.unlink(missing_ok=True)
        saved = load_state(self.state_path) if self.persist else None
        self.restored = saved is not None
        ports = saved.ports if saved is not None else {}
        try:
            return await self._start(saved, ports)
        except OSError as exc:
            if saved is None:
                raise
            # Profiles hold the old endpoints: a restored stack must listen where it did.
            raise StateError(
                f"cannot listen on the saved ports {sorted(ports.values())} ({exc}); is another"
                " stack running? Stop it, or start with --fresh (profiles made before then will"
                " not reach the new one)"
            ) from None

    async def _start(self, saved: SavedState | None, ports: dict[str, int]) -> Endpoints:
        self._moto = MotoServer(port=ports.get("aws", 0))
        aws_endpoint = self._moto.start()
        resources = saved.resources if saved is not None else provision(aws_endpoint, STAGE)

        # What each handler asks of AWS, for the check against the template's roles.
        carry_context_into_pools()
        recorder = IamRecorder(
            self.data_dir / TRACE_FILE,
            _physical_tables(resources),
            buckets=_physical_buckets(resources),
            buses={name: logical for logical, name in resources.buses.items()},
        )
        session = boto3.DEFAULT_SESSION or _default_session()
        recorder.install(session)
        EventBusRecorder(self.data_dir / EVENTS_FILE).install(session)
        functions = self._functions = LocalFunctions(STAGE, recorder)
        self._gateway = WebSocketGateway(
            functions,
            api_id=API_ID,
            stage=STAGE,
            limits=self.limits,
            port=ports.get("websocket", self.port),
        )
        self._http = LocalHttpServer(
            self._gateway,
            functions,
            asyncio.get_running_loop(),
            api_id=API_ID,
            stage=STAGE,
            port=ports.get("http", 0),
        )
        self._http.start()
        websocket = await self._gateway.start()
        _point_handlers_at(
            aws_endpoint,
            self._http.connections_url,
            resources,
            websocket=websocket,
            rate_limit_scale=self.rate_limit_scale,
            verbose=self.verbose,
        )
        positions = saved.positions if saved is not None else {}
        self._pollers = [
            StreamPoller(
                functions,
                spec,
                endpoint=aws_endpoint,
                table_name=resources.tables[spec.stream_source.table],
                queue_url=resources.queues[spec.stream_source.on_failure_queue],
                credentials=LOCAL_CREDENTIALS,
                after_sequence=positions.get(spec.name),
            )
            for spec in topology.FUNCTIONS
            if spec.stream_source is not None
        ]
        for poller in self._pollers:
            poller.start()
        if saved is not None:
            network = saved.default_network
        else:
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
                "buses": resources.buses,
            },
        )
        path = self.data_dir / "endpoints.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(endpoints.to_json())
        temporary.replace(path)  # readers never see a half-written file
        if self.persist:
            self._saved = SavedState(
                resources=resources,
                default_network=network,
                ports={
                    "aws": _port(aws_endpoint),
                    "websocket": _port(websocket),
                    "http": _port(self._http.url),
                },
                positions={},
            )
            await asyncio.to_thread(self.save)  # the first save: a crash now still restarts
            self._saver = asyncio.create_task(self._save_periodically())
        return endpoints

    def save(self) -> None:
        """Write the state now (also every ``save_every_s`` and on the way out)."""
        if self._saved is None or self._moto is None:
            return
        # Positions first: the snapshot then holds at least what they name (at least once).
        self._saved.positions = {p.spec.name: p.position for p in self._pollers if p.position}
        save_state(self.state_path, self._saved, self._moto.lock)

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.save_every_s)
            try:
                await asyncio.to_thread(self.save)
            except OSError as exc:  # a full disk: say so, keep serving
                print(f"sotto: could not save the local state: {exc}", file=sys.stderr)

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
        for poller in self._pollers:
            await asyncio.to_thread(poller.stop)
        if self.persist:
            await asyncio.to_thread(self.save)
        if self._gateway is not None:
            await self._gateway.stop()
        if self._http is not None:
            await asyncio.to_thread(self._http.stop)
        if self._functions is not None:
            self._functions.close()
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
    verbose: bool = True,
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
        # Quiet by default: a person at `make run` sees warnings and errors, not every
        # request's JSON lines (`--verbose` shows them, as CloudWatch would hold them).
        "POWERTOOLS_LOG_LEVEL": "INFO" if verbose else "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "false" if verbose else "true",
        "POWERTOOLS_SERVICE_NAME": "sotto",
        "POWERTOOLS_METRICS_NAMESPACE": "Sotto",
        **resources.environment(),
    }
    os.environ.update({name: str(value) for name, value in env.items()})
    # Credentials from a profile or session token would override the above.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


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
    """A first start (no saved state): make a network to invite into."""
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
    *,
    persist: bool = True,
    fresh: bool = False,
    save_every_s: float = 30.0,
    verbose: bool = False,
) -> int:
    """Run until Ctrl-C or SIGTERM; print the endpoints and what to do next."""

    async def main() -> None:
        stack = LocalStack(
            data_dir,
            port=port,
            limits=limits,
            rate_limit_scale=rate_limit_scale,
            persist=persist,
            fresh=fresh,
            save_every_s=save_every_s,
            verbose=verbose,
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        try:
            endpoints = await stack.start()
        except StateError as exc:
            print(f"sotto: {exc}", file=sys.stderr, flush=True)
            await stack.stop()
            raise SystemExit(1) from None
        network = endpoints.default_network["network_id"]
        server = shlex.quote(str(data_dir))
        if not persist:
            kept = "state: in memory only (--ephemeral); Ctrl-C discards it"
        elif stack.restored:
            kept = f"state: restored from {stack.state_path} (--fresh starts empty)"
        else:
            kept = f"state: new, saved in {stack.state_path} (kept across restarts)"
        print(
            "Sotto local stack is up\n"
            f"  {kept}\n"
            f"  websocket  {endpoints.websocket}\n"
            f"  http api   {endpoints.http}\n"
            f"  aws (moto) {endpoints.aws}\n"
            f"  endpoints  {data_dir / 'endpoints.json'}\n"
            f"  network    Local ({network})\n"
            "\n"
            "Next, in another terminal (repeat the first two for bob):\n"
            f"  sotto admin --server {server} invite {network} alice\n"
            f"  sotto enroll --server {server} --code CODE --profile alice\n"
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
