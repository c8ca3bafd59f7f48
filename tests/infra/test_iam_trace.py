"""Every AWS request a handler made on the local stack is granted by its role in the template.

moto enforces no IAM, so nothing else would notice a handler calling what
its role does not grant until it fails in AWS. The local stack records each
request in IAM's terms (``sotto/local/iam_trace.py``) in its data dir. This
module runs after every other test of the session (``after_suite``), drives
one scenario of its own through every route so that it never depends on
which suites ran, and then checks the union of every trace file the session
wrote (each local stack a test started writes one) against the synthesized
roles. It fails on any request its function's role does not allow, on any
request made outside a function, and on any function or route that made no
appearance; the grants no traced request used are listed in the session
summary ("IAM grants never used").
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sotto import topology
from sotto.client.api import fetch_info
from sotto.client.events import MessageEvent
from sotto.client.messenger import Messenger
from sotto.client.server import ServerConfig, resolve_server
from sotto.local.iam_trace import TRACE_FILE, TracedCall, read_trace
from sotto.protocol.certificates import DeviceRevocation
from tests.messaging.conftest import (
    enroll_person,
    link_second_device,
    open_messenger,
)
from tests.support.people import add_device, seed_person
from tests.support.stack import (
    Socket,
    Stack,
    admin,
    b64,
    http,
    invite,
    run_schedule,
    seed_device,
)

from .conftest import UNUSED_GRANTS, Synthesized
from .iam_policy import ACCOUNT, PARTITION, REGION, Grant, PolicyEvaluator, Request

pytestmark = [pytest.mark.synth, pytest.mark.after_suite]
# The services whose grants the trace accounts for (KMS via S3/DynamoDB is the service's call).
_TRACED_PREFIXES = ("dynamodb:", "execute-api:", "events:", "s3:")


def _drive_every_route(stack: Stack, home: Path) -> None:
    """One pass through every route, in an order that reaches the rarer paths too:
    a device linked and then revoked while its user has conversations, a suspended
    user's open socket closed through @connections DELETE."""
    server: ServerConfig = resolve_server(str(stack.log_path.parent), fetch_info)
    assert http(stack, "GET", "/v1/info")[0] == 200
    network = admin(stack, "POST", "/networks", {"name": f"iam-{secrets.token_hex(3)}"})
    admin(stack, "GET", "/networks")
    suffix = secrets.token_hex(3)
    alice = enroll_person(stack, server, home, f"alice{suffix}")
    bob = enroll_person(stack, server, home, f"bob{suffix}")
    a1, b1 = (open_messenger(home, f"{name}{suffix}") for name in ("alice", "bob"))
    devices: list[Messenger] = [a1, b1]
    try:
        a1.add_contact("bob", bob)
        b1.add_contact("alice", alice)
        a1.replenish_prekeys()
        room = a1.create_room(f"iam{suffix}", [bob])
        a1.send_text("bob", "direct")  # fetch_bundles, conversation_devices, distribute, send
        carol = enroll_person(stack, server, home, f"carol{suffix}")
        a1.add_members(room, [carol])
        a1.send_text(room, "room")
        assert b1.sync(read=True)  # sync, ack
        _drive_files(stack, home, a1, b1)
        a1.set_role(room, carol, "moderator")  # set_role
        a1.remove_members(room, [carol])  # remove_members
        b1.leave(room)  # leave
        a1.conversations()  # list_conversations
        a1.safety(bob)  # list_devices
        # The second device joins alice's conversations, then is revoked from them.
        # Under a devices-per-user cap, an approval counts and moves the device slot.
        policy = f"/networks/{network['network_id']}/policy"
        admin(stack, "PUT", policy, {"max_devices": 5})
        link_second_device(server, home, f"alice{suffix}", f"alice{suffix}-2")
        admin(stack, "PUT", policy, {"max_devices": None})
        second = open_messenger(home, f"alice{suffix}-2")
        devices.append(second)
        admin(stack, "GET", f"/networks/{network['network_id']}/users")
        _drive_policy(stack, network["network_id"])
        admin(stack, "GET", f"/users/{alice}")
        admin(stack, "GET", f"/devices/{second.info.device_id}")
        admin(stack, "POST", f"/devices/{second.info.device_id}/revoke")
    finally:
        for messenger in devices:
            messenger.close()
    # ping and $default on a raw socket; then suspend its user while it is open.
    device = seed_device(stack)
    with Socket(stack, device) as socket:
        assert socket.request("ping")["action"] == "pong"
        assert socket.request("no_such_action")["action"] == "error"
        admin(stack, "POST", f"/users/{device.user_id}/suspend")
    admin(stack, "POST", f"/users/{device.user_id}/reinstate")
    _drive_invites_and_audit(stack, network["network_id"])


def _drive_invites_and_audit(stack: Stack, network_id: str) -> None:
    """Invites listed, reissued, revoked, made in bulk; a user's own revocation; the
    audit log read and sealed into the archive."""
    base = f"/networks/{network_id}"
    pending = invite(stack, network_id)
    admin(stack, "GET", f"{base}/invites")
    admin(stack, "POST", f"{base}/invites/{pending['user_id']}/reissue", {})
    admin(stack, "POST", f"{base}/invites/{pending['user_id']}/revoke")
    rows = [{"handle": f"bulk{secrets.token_hex(3)}"}]
    admin(stack, "POST", f"{base}/invites/bulk", {"invites": rows})
    person = seed_person(stack, network_id, prekeys=0)
    spare = add_device(stack, person)
    first = person.devices[0]
    assert first.identity is not None
    revocation = DeviceRevocation.issue(
        first.identity, person.user_id, spare.device_id, revoked_at=int(time.time() * 1000)
    )
    with Socket(stack, spare), Socket(stack, first) as socket:
        answer = socket.request("revoke_device", revocation=b64(revocation.serialize()))
        assert answer["action"] == "device_revoked"
    admin(stack, "GET", f"{base}/audit?after=0")
    assert run_schedule(stack, "audit_sealer")["sealed"]


def _drive_policy(stack: Stack, network_id: str) -> None:
    """Policy and security groups, with a change pushed to an online device."""
    base = f"/networks/{network_id}"
    device = seed_device(stack, network_id=network_id)
    with Socket(stack, device) as socket:
        assert socket.request("policy")["action"] == "policy"
        admin(stack, "PUT", f"{base}/policy", {"max_expiry_s": 86400})
        socket.push("policy")
    admin(stack, "POST", f"{base}/groups", {"name": "iam"})
    admin(stack, "PUT", f"{base}/groups/iam/policy", {"max_devices": 5})
    admin(stack, "POST", f"{base}/groups/iam/members", {"user_ids": [device.user_id]})
    admin(stack, "GET", f"/users/{device.user_id}/policy")
    admin(stack, "POST", f"{base}/groups/iam/members/remove", {"user_ids": [device.user_id]})
    admin(stack, "GET", f"{base}/policy")
    # Back to no limit: the rest of the scenario sends without expiry.
    admin(stack, "PUT", f"{base}/policy", {"max_expiry_s": None})


def _drive_files(stack: Stack, home: Path, sender: Messenger, receiver: Messenger) -> None:
    """Every file route, and the attachments function through a removed file record."""
    source = home / "iam-file.bin"
    source.write_bytes(secrets.token_bytes(9 * 1024 * 1024))  # two parts
    sender.file_policy()  # file_policy
    sender.send_file("bob", source)  # start, parts, complete; send names the upload
    (event,) = [e for e in receiver.sync(read=True) if isinstance(e, MessageEvent) and e.attachment]
    assert event.attachment is not None
    out = home / "iam-downloads"
    out.mkdir()
    receiver.download(event.message_id, out)  # file_download
    cid = sender.resolve("bob")
    started = sender._call("file_upload_start", conversation_id=cid, size=100)
    sender._call("file_upload_abort", object_id=started["object_id"])  # file_upload_abort
    # What TTL does at the message's end: the record goes, the attachments function purges.
    object_id = event.attachment["object_id"]
    stack.client("dynamodb").delete_item(
        TableName=stack.table("MessagesTable"),
        Key={"pk": {"S": f"FILE#{object_id}"}, "sk": {"S": "FILE"}},
    )
    s3 = stack.client("s3")
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"] if "attachments" in b["Name"])
    deadline = time.monotonic() + 20
    while s3.list_object_versions(Bucket=bucket, Prefix=f"f/{object_id}").get("Versions"):
        assert time.monotonic() < deadline, "the removed record's object was not purged"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def traced(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> list[TracedCall]:
    _drive_every_route(stack, tmp_path_factory.mktemp("iam-home"))
    files = sorted(tmp_path_factory.getbasetemp().rglob(TRACE_FILE))
    assert files, "no local stack wrote an IAM trace"
    calls = sorted({call for path in files for call in read_trace(path)}, key=repr)
    assert any(call.action for call in calls), "the trace holds no AWS request at all"
    return calls


def _request(synth: Synthesized, evaluator: PolicyEvaluator, call: TracedCall) -> Request:
    assert call.action is not None
    assert call.resource is not None
    kind, _, target = call.resource.partition(":")
    if kind == "table" and target != "*":
        logical_id, _, index = target.partition("/index/")
        arn = evaluator.table_arn(synth.logical_id(synth.stack.tables[logical_id]))
        resource = f"{arn}/index/{index}" if index else arn
    elif kind == "bus":
        resource = f"{synth.logical_id(synth.stack.audit_bus)}.Arn"
    elif kind == "connections":
        api = synth.logical_id(synth.stack.websocket.api)
        stage = synth.stack.settings.stage
        prefix = f"arn:{PARTITION}:execute-api:{REGION}:{ACCOUNT}"
        resource = f"{prefix}:{api}/{stage}/{target}/@connections/Zm9vYmFyMTIzNA="
    elif kind in ("bucket", "object"):
        logical_id, _, key = target.partition("/")
        arn = f"{synth.logical_id(synth.stack.buckets[logical_id])}.Arn"
        resource = f"{arn}/{key}" if kind == "object" else arn
    elif kind == "key" and target.endswith("/s3"):
        key_id = target.removesuffix("/s3")
        resource = f"{synth.logical_id(synth.stack.keys[key_id])}.Arn"
    else:
        resource = "*"  # a service the recorder does not map to ARNs: never granted by accident
    context = {"aws:PrincipalAccount": ACCOUNT, "aws:RequestedRegion": REGION}
    if kind == "key":
        # S3 uses the bucket's key on the caller's behalf, through S3 only.
        context |= {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:CallerAccount": ACCOUNT}
    return Request(call.action, resource, context)


def _role_statements(
    synth: Synthesized, evaluator: PolicyEvaluator, name: str
) -> list[dict[str, Any]]:
    function = synth.resources[synth.logical_id(synth.stack.functions[name])]
    return evaluator.role_statements(function["Properties"]["Role"]["Fn::GetAtt"][0])


def test_trace_shows_every_function_and_route_exercised(traced: list[TracedCall]) -> None:
    functions = {call.function for call in traced}
    assert {spec.name for spec in topology.FUNCTIONS} <= functions
    routes = {(call.function, call.route) for call in traced}
    expected = {(topology.WS_AUTHORIZER, "$connect")}
    expected |= {(route.function, route.route_key) for route in topology.WS_ROUTES}
    expected |= {(r.function, f"{r.method} {r.path}") for r in topology.HTTP_ROUTES}
    missing = sorted(expected - routes)
    assert missing == [], missing


def test_no_aws_request_is_made_outside_a_function(traced: list[TracedCall]) -> None:
    assert [call for call in traced if call.function is None] == []


def test_every_traced_request_is_granted_by_its_functions_role(
    traced: list[TracedCall], synth: Synthesized, request: pytest.FixtureRequest
) -> None:
    evaluator = PolicyEvaluator(synth.template_dict)
    statements = {
        spec.name: _role_statements(synth, evaluator, spec.name) for spec in topology.FUNCTIONS
    }
    denied: list[str] = []
    used: dict[str, set[Grant]] = defaultdict(set)
    for call in traced:
        if call.action is None or call.function is None:
            continue
        wanted = _request(synth, evaluator, call)
        if not evaluator.allows(statements[call.function], wanted):
            denied.append(f"{call.function} ({call.route}): {call.action} on {wanted.resource}")
        for grant in evaluator.grants(statements[call.function], _TRACED_PREFIXES):
            if evaluator.allows([_statement(grant)], wanted):
                used[call.function].add(grant)
    unused = [
        f"{name}: {grant.action} on {grant.resource} ({grant.sid})"
        for name, grants in sorted(statements.items())
        for grant in evaluator.grants(grants, _TRACED_PREFIXES)
        if grant not in used[name]
    ]
    request.config.stash[UNUSED_GRANTS] = unused
    assert denied == []


def _statement(grant: Grant) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": grant.action, "Resource": grant.resource}
