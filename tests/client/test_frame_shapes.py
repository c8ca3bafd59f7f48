"""``sotto.frames.requests`` and ``sotto.frames.answers``: one shape per route, both sides.

The SDK checks its requests with the models the server parses with, and parses
answers and pushes with the shapes the server builds them as.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, NotRequired, cast, get_origin, get_type_hints

import pytest

from sotto import topology
from sotto.client.api import AdminApi, PublicApi
from sotto.client.errors import InvalidRequest, MalformedFrame, ServerResolutionError
from sotto.client.retention import fetch_retention
from sotto.client.server import resolve_server
from sotto.client.session import shaped
from sotto.frames import answers, answers_http, paginate_lists
from sotto.frames import answers_admin as admin_answers
from sotto.frames import answers_conversations as conversations_answers
from sotto.frames import answers_devices as devices_answers
from sotto.frames import answers_files as files_answers
from sotto.frames.requests import request_model, requests_by_action
from sotto.protocol.safety import IdentityTracker
from sotto_server.handlers import conversations, files, keys, messages

MAIL: dict[str, Any] = {
    "mail_id": "ab#01",
    "conversation_id": "c1",
    "kind": "distribution",
    "data": "AAAA",
    "from_device": "d1",
    "server_time": 1,
}
MESSAGE: dict[str, Any] = {"conversation_id": "c1", "seq": 3, "envelope": "AAAA", "server_time": 2}


def test_every_websocket_route_has_one_shared_request_model_and_the_server_uses_it() -> None:
    routes = {r.route_key for r in topology.WS_ROUTES if not r.route_key.startswith("$")}
    assert routes == set(requests_by_action())
    served = {}
    for handler in (conversations, files, keys, messages):
        for action, (model, _) in handler.routes().items():
            served[action] = model
    assert served  # the route tables' models are the shared ones themselves, not copies
    for action, model in served.items():
        assert request_model(action) is model, action


def test_an_unknown_action_has_no_model() -> None:
    assert request_model("no_such_route") is None


def test_sync_parts_as_the_server_paginates_them_parse_as_sync_parts() -> None:
    header: answers.SyncHeader = {
        "action": "sync",
        "id": "r1",
        "more": True,
        "through": {"c1": 3},
        "rosters": {"c1": 2},
        "resume": "token",
    }
    parts = paginate_lists(
        header, {"mail": [MAIL] * 300, "messages": [{**MESSAGE, "envelope": "A" * 4000}] * 40}
    )
    assert len(parts) > 1
    for part in parts:
        assert answers.parse(answers.SyncPart, part) == part


@pytest.mark.parametrize(
    ("shape", "frame", "bad"),
    [
        (answers.MessagePush, {**MESSAGE, "action": "message", "seq": "3"}, ("seq",)),
        (answers.MessagePush, {**MESSAGE, "action": "message", "seq": True}, ("seq",)),
        (answers.MailPush, {"action": "mail", **MAIL, "data": None}, ("data",)),
        (answers.MailPush, {"action": "message", **MAIL}, ("action",)),
        (answers.PrekeysLowPush, {"action": "prekeys_low"}, ("one_time_prekeys",)),
        (
            answers.SentAnswer,
            {"action": "sent", "id": "r"},
            ("conversation_id", "message_id", "server_time"),
        ),
        (
            answers.SyncPart,
            {
                "action": "sync",
                "id": "r",
                "more": False,
                "through": {},
                "rosters": {},
                "mail": [{**MAIL, "server_time": 1.5}],
                "messages": [],
            },
            ("mail.0.server_time",),
        ),
        (answers.BundlesPart, ["not", "an", "object"], ("frame",)),
    ],
)
def test_a_frame_off_its_shape_is_a_shape_error_naming_the_fields(
    shape: type[Any], frame: Any, bad: tuple[str, ...]
) -> None:
    with pytest.raises(answers.ShapeError) as raised:
        answers.parse(shape, frame)
    assert raised.value.fields == bad
    assert shape.__name__ in str(raised.value)


def test_fields_a_shape_does_not_name_are_dropped_for_a_newer_server() -> None:
    frame = {"action": "acked", "id": None, "later": 1}
    assert answers.parse(answers.AckedAnswer, frame) == {"action": "acked", "id": None}


def test_the_shapes_import_neither_pydantic_nor_the_models() -> None:
    # The server imports them for types only; parsing brings pydantic in when first used.
    code = "import sys, sotto.frames.answers; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


KEY = "AAAA"  # a base64url field's stand-in: shapes check it is a string
# Admin answers (of their shapes), for the HTTP API's routes below and the shapes' table.
NETWORK: dict[str, Any] = {"network_id": "n1", "name": "Acme", "created_at": 1}
INVITE: dict[str, Any] = {
    "code": "ABCD-EFGH-JKLM",
    "network_id": "n1",
    "user_id": "u1",
    "handle": "alice",
    "expires_at": 9,
    "display_name": "Alice",
    "groups": ["ops"],
}
RETENTION: dict[str, Any] = {
    "network_id": "n1",
    "status": "enabled",
    "years": 7,
    "officer_identity": KEY,
    "wrapped_officer_key": KEY,
    "generation": 1,
    "device_id": "rtn-1",
    "certificate": KEY,
    "prekey": KEY,
    "updated_at": 5,
    "generations": [
        {
            "generation": 1,
            "device_id": "rtn-1",
            "certificate": KEY,
            "prekey": KEY,
            "wrapped_device_key": KEY,
            "created_at": 5,
        }
    ],
}
POLICY_SET: dict[str, Any] = {
    "network_id": "n1",
    "group": "ops",
    "policy": {"max_expiry_s": 3600},
    "pushed": 2,
}
MEMBERS: dict[str, Any] = {
    "network_id": "n1",
    "group": "ops",
    "refused": [{"user_id": "u9", "reason": "no such user in this network"}],
    "pushed": 1,
}
# What the public routes answer (of their shapes), by path; and the admin routes the
# HTTP API's tests call.
_HTTP_ANSWERS: dict[str, dict[str, Any]] = {
    "/v1/enroll/lookup": {
        "network_id": "n1",
        "network_name": "Acme",
        "user_id": "u1",
        "handle": "alice",
        "expires_at": 5,
    },
    "/v1/enroll": {"network_id": "n1", "user_id": "u1", "device_id": "d1"},
    "/v1/link/requests": {"network_id": "n1", "user_id": "u1", "handle": "alice", "link_id": "l1"},
    "/v1/link/status": {"state": "open"},
}
_ADMIN_ANSWERS: dict[str, dict[str, Any]] = {
    "/v1/admin/networks": NETWORK,
    "/v1/admin/networks/n1/invites": INVITE,
    "/v1/admin/networks/n1/invites/u1/reissue": INVITE,
    "/v1/admin/networks/n1/invites/bulk": {"network_id": "n1", "created": [], "refused": []},
    "/v1/admin/networks/n1/policy": {**POLICY_SET, "group": None},
    "/v1/admin/networks/n1/groups": {
        "network_id": "n1",
        "group": "ops",
        "policy": {},
        "members": [],
    },
    "/v1/admin/networks/n1/groups/ops/members": {**MEMBERS, "added": ["u1"]},
    "/v1/admin/networks/n1/groups/ops/members/remove": {**MEMBERS, "removed": ["u1"]},
    "/v1/admin/networks/n1/retention": RETENTION,
    "/v1/admin/networks/n1/retention/rotate": RETENTION,
}


class _Recorder:
    """Stands in for HttpClient: records what would be sent; answers as the server would."""

    def __init__(
        self, answers: dict[str, dict[str, Any]] | None = None, every: dict[str, Any] | None = None
    ) -> None:
        self.sent: list[tuple[str, str, Any]] = []
        self.answers = _HTTP_ANSWERS | _ADMIN_ANSWERS if answers is None else answers
        self.every = every  # the answer to every path the table does not name

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.call("POST", path, {} if body is None else body)

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.sent.append((method, path, body))
        return dict(self.answers.get(path, self.every or {}))


def _apis(
    answers: dict[str, dict[str, Any]] | None = None, *, every: dict[str, Any] | None = None
) -> tuple[PublicApi, AdminApi, _Recorder]:
    recorder = _Recorder(answers, every)
    public, admin = PublicApi.__new__(PublicApi), AdminApi.__new__(AdminApi)
    public._http = admin._http = cast(Any, recorder)
    return public, admin, recorder


def test_the_http_api_sends_bodies_that_parse_with_the_servers_models() -> None:
    public, admin, recorder = _apis()
    code, key = "ABCD-EFGH-JKLM", "AAAA"
    public.enroll_lookup(code)
    public.enroll(code, identity_key=key, device_certificate=key, signed_prekey=key)
    public.link_request(code, device_id="d1", device_key=key)
    public.link_status(code)
    admin.create_network("Acme")
    admin.invite("n1", "alice", ttl_s=3600)
    admin.reissue_invite("n1", "u1", ttl_s=3600)
    admin.bulk_invite("n1", [{"row": 2, "handle": "bob"}])
    admin.set_policy("n1", {"max_expiry_s": 3600})
    admin.create_group("n1", "ops")
    admin.add_group_members("n1", "ops", ["u1"])
    admin.remove_group_members("n1", "ops", ["u1"])
    admin.enable_retention("n1", {"years": 7})
    admin.rotate_retention(
        "n1",
        {"previous_generation": 1, "certificate": key, "prekey": key, "wrapped_device_key": key},
    )
    assert len(recorder.sent) == 14


@pytest.mark.parametrize(
    ("call", "bad"),
    [
        (lambda public, admin: public.enroll_lookup("short"), ("code",)),
        (lambda public, admin: admin.invite("n1", "Not A Handle"), ("handle",)),
        (lambda public, admin: admin.set_policy("n1", {"colour": "red"}), ("colour",)),
        (lambda public, admin: admin.add_group_members("n1", "ops", []), ("user_ids",)),
    ],
)
def test_the_http_api_refuses_an_invalid_body_before_sending_it(
    call: Any, bad: tuple[str, ...]
) -> None:
    public, admin, recorder = _apis()
    with pytest.raises(InvalidRequest) as raised:
        call(public, admin)
    assert raised.value.fields == bad
    assert recorder.sent == []


@pytest.mark.parametrize(
    ("call", "answer", "bad"),
    [
        (lambda public: public.enroll_lookup("ABCD-EFGH-JKLM"), {"user_id": "u1"}, "network_id"),
        (
            lambda public: public.enroll(
                "ABCD-EFGH-JKLM",
                identity_key="AAAA",
                device_certificate="AAAA",
                signed_prekey="AAAA",
            ),
            {"network_id": "n1", "user_id": "u1", "device_id": 7},
            "device_id",
        ),
        (lambda public: public.link_status("ABCD-EFGH-JKLM"), {"state": None}, "state"),
    ],
)
def test_the_http_api_refuses_an_answer_off_its_shape_naming_the_field(
    call: Any, answer: dict[str, Any], bad: str
) -> None:
    public, _admin, recorder = _apis({path: answer for path in _HTTP_ANSWERS})
    with pytest.raises(MalformedFrame) as raised:
        call(public)
    assert bad in raised.value.fields
    assert len(recorder.sent) == 1


def test_an_audit_page_off_its_shape_is_refused_naming_the_entry_field() -> None:
    path = "/v1/admin/networks/n1/audit?after=0"
    page = {"network_id": "n1", "head": None, "next_after": None, "entries": [{"seq": "1"}]}
    _public, admin, _recorder = _apis({path: page})
    with pytest.raises(MalformedFrame) as raised:
        admin.audit("n1")
    assert raised.value.fields == ("entries.0.body", "entries.0.hash", "entries.0.seq")
    good = {**page, "entries": [{"seq": 1, "body": "{}", "hash": "h", "extra": True}]}
    _public, admin, _recorder = _apis({path: good})
    assert admin.audit("n1")["entries"] == [{"seq": 1, "body": "{}", "hash": "h"}]


@pytest.mark.parametrize(
    ("call", "answer", "bad"),
    [
        (
            lambda admin: admin.create_network("Acme"),
            {**NETWORK, "created_at": "1"},
            ("created_at",),
        ),
        (
            lambda admin: admin.list_networks(),
            {"networks": [{"name": "x"}]},
            ("networks.0.created_at", "networks.0.network_id"),
        ),
        (lambda admin: admin.invite("n1", "alice"), {**INVITE, "code": None}, ("code",)),
        (
            lambda admin: admin.bulk_invite("n1", [{"handle": "bob"}]),
            {"network_id": "n1", "created": 5, "refused": []},
            ("created",),
        ),
        (
            lambda admin: admin.get_user("u1"),
            {"user_id": "u1"},
            ("created_at", "devices", "handle", "identity_key", "network_id", "status"),
        ),
        (
            lambda admin: admin.revoke_device("d1"),
            {
                "device_id": "d1",
                "user_id": "u1",
                "network_id": "n1",
                "status": "revoked",
                "created_at": 1,
                "signing_key": KEY,
                "certificate": True,
            },
            ("certificate",),
        ),
        (
            lambda admin: admin.get_retention("n1"),
            {"network_id": "n1", "status": "enabled"},
            (
                "certificate",
                "device_id",
                "generation",
                "generations",
                "officer_identity",
                "prekey",
                "updated_at",
                "wrapped_officer_key",
                "years",
            ),
        ),
        (lambda admin: admin.get_retention("n1"), {**RETENTION, "status": "on"}, ("status",)),
        (lambda admin: admin.get_retention("n1"), {"status": "off"}, ("network_id",)),
        (
            lambda admin: admin.show_policy("n1"),
            {
                "network_id": "n1",
                "version": 1,
                "network": {},
                "groups": [{"name": "ops", "policy": [], "members": []}],
                "retention": {"required": True},
            },
            ("groups.0.policy",),
        ),
        (
            lambda admin: admin.set_policy("n1", {"max_devices": 3}),
            {**POLICY_SET, "pushed": "2"},
            ("pushed",),
        ),
        (
            lambda admin: admin.add_group_members("n1", "ops", ["u1"]),
            {**MEMBERS, "removed": ["u1"]},
            ("added",),
        ),
        (
            lambda admin: admin.user_policy("u1"),
            {"network_id": "n1"},
            ("groups", "policy", "sources", "user_id", "version"),
        ),
    ],
)
def test_the_admin_api_refuses_an_answer_off_its_shape_naming_the_fields(
    call: Any, answer: dict[str, Any], bad: tuple[str, ...]
) -> None:
    _public, admin, recorder = _apis({}, every=answer)
    with pytest.raises(MalformedFrame) as raised:
        call(admin)
    assert raised.value.fields == bad
    assert len(recorder.sent) == 1


# -- every route's answer shape -----------------------------------------------------

# One well-formed frame of every shape a route answers or pushes, both sides' tables.
GOOD: dict[type[Any], dict[str, Any]] = {
    answers.SentAnswer: {
        "action": "sent",
        "id": "r",
        "conversation_id": "c1",
        "message_id": "ab",
        "server_time": 1,
        "seq": 2,
        "mailbox": False,
    },
    answers.SyncPart: {
        "action": "sync",
        "id": "r",
        "part": 0,
        "final": True,
        "more": True,
        "through": {"c1": 3},
        "rosters": {"c1": 1},
        "resume": "token",
        "mail": [MAIL],
        "messages": [MESSAGE],
    },
    answers.AckedAnswer: {"action": "acked", "id": "r"},
    answers.DistributedAnswer: {"action": "distributed", "id": "r", "chain_id": KEY, "count": 2},
    answers.BundlesPart: {
        "action": "bundles",
        "id": "r",
        "part": 0,
        "final": True,
        "bundles": [{"user_id": "u1", "device_id": "d1", "kind": "signed", "prekey": KEY}],
        "unavailable": [{"user_id": "u2", "device_id": "d2", "reason": "revoked"}],
    },
    answers.PolicyAnswer: {
        "action": "policy",
        "id": "r",
        "network_id": "n1",
        "user_id": "u1",
        "policy": {"max_expiry_s": 3600, "files_allowed": True, "read_receipts": "enabled"},
        "sources": {"max_expiry_s": "network"},
        "groups": ["ops"],
        "version": 3,
    },
    conversations_answers.ConversationAnswer: {
        "action": "conversation",
        "id": "r",
        "conversation": {
            "conversation_id": "room-1",
            "kind": "room",
            "members": [{"user_id": "u1", "role": "moderator"}],
            "roster_version": 2,
            "last_seq": 0,
            "created_at": 5,
            "log_seq": 0,
        },
    },
    conversations_answers.LeftAnswer: {"action": "left", "id": "r", "conversation_id": "room-1"},
    conversations_answers.ConversationsPart: {
        "action": "conversations",
        "id": "r",
        "part": 0,
        "final": True,
        "conversations": [
            {
                "conversation_id": "room-1",
                "kind": "room",
                "role": "member",
                "roster_version": 2,
                "member_count": 3,
                "last_seq": 9,
            }
        ],
    },
    conversations_answers.ConversationDevicesPart: {
        "action": "conversation_devices",
        "id": "r",
        "part": 0,
        "final": True,
        "conversation_id": "room-1",
        "roster_version": 2,
        "members": [{"user_id": "u1", "role": "member", "handle": "alice", "identity_key": KEY}],
        "devices": [{"user_id": "u1", "device_id": "d1", "certificate": KEY}],
    },
    conversations_answers.MembershipLogPart: {
        "action": "membership_log",
        "id": "r",
        "part": 0,
        "final": True,
        "conversation_id": "room-1",
        "head_seq": 4,
        "more": False,
        "operations": [{"seq": 0, "op": KEY}],
        "identities": [{"user_id": "u1", "identity_key": KEY}],
    },
    conversations_answers.IdentitiesPart: {
        "action": "identities",
        "id": "r",
        "part": 0,
        "final": True,
        "identities": [{"user_id": "u1", "handle": "alice", "identity_key": KEY}],
        "unknown": [{"user_id": "u9"}],
    },
    devices_answers.PongAnswer: {"action": "pong", "id": "r", "payload": "hi", "server_time": 1},
    devices_answers.PrekeysPublishedAnswer: {
        "action": "prekeys_published",
        "id": "r",
        "one_time_prekeys": 40,
    },
    devices_answers.PrekeyStatusAnswer: {
        "action": "prekey_status",
        "id": "r",
        "one_time_prekeys": 40,
        "signed_prekey_expires_at": 9,
    },
    devices_answers.DevicesPart: {
        "action": "devices",
        "id": "r",
        "part": 0,
        "final": True,
        "user_id": "u1",
        "identity_key": KEY,
        "devices": [{"device_id": "d1", "certificate": KEY, "status": "active"}],
    },
    devices_answers.UserAnswer: {
        "action": "user",
        "id": "r",
        "user_id": "u1",
        "handle": "alice",
        "status": "active",
        "identity_key": KEY,
    },
    devices_answers.LinkCreatedAnswer: {
        "action": "link_created",
        "id": "r",
        "link_id": "l1",
        "code": "ABCD-EFGH-JKLM",
        "expires_at": 9,
    },
    devices_answers.LinkPendingAnswer: {
        "action": "link_pending",
        "id": "r",
        "link_id": "l1",
        "state": "requested",
        "device_id": "d2",
        "device_key": KEY,
    },
    devices_answers.LinkApprovedAnswer: {"action": "link_approved", "id": "r", "device_id": "d2"},
    devices_answers.DeviceRevokedAnswer: {"action": "device_revoked", "id": "r", "device_id": "d2"},
    devices_answers.RetentionAnswer: {
        "action": "retention",
        "id": "r",
        "network_id": "n1",
        "enabled": True,
        "years": 7,
        "officer_identity": KEY,
        "certificate": KEY,
        "prekey": KEY,
    },
    files_answers.FilePolicyAnswer: {
        "action": "file_policy",
        "id": "r",
        "files_allowed": True,
        "max_file_bytes": 10,
        "location_allowed": False,
    },
    files_answers.FileUploadStartedAnswer: {
        "action": "file_upload_started",
        "id": "r",
        "object_id": "o1",
        "part_size": 8,
        "part_count": 2,
        "expires_at": 9,
    },
    files_answers.FileUploadPartsPart: {
        "action": "file_upload_parts",
        "id": "r",
        "part": 0,
        "final": True,
        "object_id": "o1",
        "part_size": 8,
        "part_count": 2,
        "url_expires_at": 9,
        "urls": [{"part": 1, "url": "https://s3/1"}],
        "held": [{"part": 1, "etag": '"e"', "size": 8}],
    },
    files_answers.FileUploadCompletedAnswer: {
        "action": "file_upload_completed",
        "id": "r",
        "object_id": "o1",
    },
    files_answers.FileUploadAbortedAnswer: {"action": "file_upload_aborted", "id": "r"},
    files_answers.FileDownloadAnswer: {
        "action": "file_download",
        "id": "r",
        "object_id": "o1",
        "size": 16,
        "url": "https://s3/o1",
        "url_expires_at": 9,
    },
    answers.MailPush: {"action": "mail", **MAIL},
    answers.MessagePush: {"action": "message", **MESSAGE},
    answers.MembershipPush: {
        "action": "membership",
        "conversation_id": "room-1",
        "kind": "room",
        "change": "added",
        "users": ["u2"],
        "by": "u1",
        "roster_version": 3,
        "seq": 1,
        "op": KEY,
    },
    answers.PrekeysLowPush: {"action": "prekeys_low", "one_time_prekeys": 3},
    answers.PolicyPush: {
        "action": "policy",
        "network_id": "n1",
        "user_id": "u1",
        "policy": {},
        "sources": {},
        "groups": [],
        "version": 1,
    },
    devices_answers.LinkRequestedPush: {"action": "link_requested", "link_id": "l1"},
    answers_http.InfoAnswer: {
        "service": "sotto",
        "version": "0.1.0",
        "stage": "local",
        "connect_token_version": 1,
        "websocket": "ws://localhost",
        "audience": "api/local",
    },
    answers_http.EnrollLookupAnswer: _HTTP_ANSWERS["/v1/enroll/lookup"],
    answers_http.EnrolledAnswer: _HTTP_ANSWERS["/v1/enroll"],
    answers_http.LinkRequestAnswer: _HTTP_ANSWERS["/v1/link/requests"],
    answers_http.LinkStatusAnswer: {"state": "approved", "device_certificate": KEY},
    answers_http.AuditPage: {
        "network_id": "n1",
        "head": {"seq": 3, "hash": "h", "sealed_seq": 2},
        "entries": [{"seq": 1, "body": "{}", "hash": "h"}],
        "next_after": 1,
    },
    admin_answers.NetworkAnswer: NETWORK,
    admin_answers.NetworksAnswer: {"networks": [NETWORK]},
    admin_answers.InviteAnswer: INVITE,
    admin_answers.InvitesAnswer: {
        "network_id": "n1",
        "invites": [
            {
                "user_id": "u1",
                "handle": "alice",
                "display_name": "Alice",
                "groups": "ops,sales",
                "state": "pending",
                "failed_attempts": 0,
                "created_at": 1,
                "expires_at": 9,
            }
        ],
    },
    admin_answers.InviteRevokedAnswer: {
        "network_id": "n1",
        "user_id": "u1",
        "handle": "alice",
        "revoked": True,
    },
    admin_answers.BulkInviteAnswer: {
        "network_id": "n1",
        "created": [INVITE],
        "refused": [{"row": 3, "handle": "Bad", "reason": "a handle is 1-32 of a-z 0-9 . _ -"}],
    },
    admin_answers.UsersAnswer: {
        "network_id": "n1",
        "users": [{"user_id": "u1", "handle": "alice", "status": "active"}],
    },
    admin_answers.AdminUserAnswer: {
        "user_id": "u1",
        "network_id": "n1",
        "handle": "alice",
        "status": "suspended",
        "created_at": 1,
        "identity_key": KEY,
        "devices": [{"device_id": "d1", "status": "active"}],
    },
    admin_answers.AdminDeviceAnswer: {
        "device_id": "d1",
        "user_id": "u1",
        "network_id": "n1",
        "status": "revoked",
        "created_at": 1,
        "signing_key": KEY,
        "certificate": KEY,
    },
    admin_answers.RetentionOffAnswer: {"network_id": "n1", "status": "off"},
    admin_answers.RetentionAdminAnswer: RETENTION,
    admin_answers.NetworkPolicyAnswer: {
        "network_id": "n1",
        "version": 4,
        "network": {"max_expiry_s": 86400, "files_allowed": False},
        "groups": [{"name": "ops", "policy": {"read_receipts": "forced"}, "members": ["u1"]}],
        "retention": {"required": True, "years": 7},
    },
    admin_answers.PolicySetAnswer: POLICY_SET,
    admin_answers.GroupCreatedAnswer: _ADMIN_ANSWERS["/v1/admin/networks/n1/groups"],
    admin_answers.GroupMembersAddedAnswer: {**MEMBERS, "added": ["u1"]},
    admin_answers.GroupMembersRemovedAnswer: {**MEMBERS, "removed": ["u1"]},
    answers.PolicyFields: {
        "network_id": "n1",
        "user_id": "u1",
        "policy": {"max_devices": 3},
        "sources": {"max_devices": "ops"},
        "groups": ["ops"],
        "version": 4,
    },
}
SHAPES = sorted(GOOD, key=lambda shape: shape.__name__)


def _required(shape: type[Any]) -> list[str]:
    # __required_keys__ cannot see NotRequired in a string annotation (PEP 563): resolve them.
    hints = get_type_hints(shape, include_extras=True)
    return sorted(name for name, hint in hints.items() if get_origin(hint) is not NotRequired)


# A value no field of any shape takes (strict: not an int, a string, a list or null).
WRONG = 1.5


def test_every_route_and_push_has_a_shape_and_every_shape_an_example_here() -> None:
    assert set(answers.ANSWERS) == set(requests_by_action())
    assert set(answers.ANSWERS.values()) | set(answers.PUSHES.values()) <= set(GOOD)


def test_every_http_route_has_its_answer_shapes_and_every_shape_an_example_here() -> None:
    routes = {f"{route.method} {route.path}" for route in topology.HTTP_ROUTES}
    assert set(answers_http.HTTP_ANSWERS) == routes
    shapes = {shape for named in answers_http.HTTP_ANSWERS.values() for shape in named}
    assert shapes <= set(GOOD)
    # Every shape the admin module defines is some route's answer or part of one.
    assert {getattr(admin_answers, name) for name in admin_answers.__all__} <= set(GOOD) | {
        admin_answers.BulkRefusal,
        admin_answers.GroupPolicyItem,
        admin_answers.InviteItem,
        admin_answers.MemberRefusal,
        admin_answers.NetworkPolicyFields,
        admin_answers.PolicyRetention,
        admin_answers.PolicySetFields,
        admin_answers.RetentionGenerationItem,
        admin_answers.UserDeviceItem,
        admin_answers.UserItem,
    }


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_a_good_frame_parses_as_it_is_and_fields_a_shape_does_not_name_are_dropped(
    shape: type[Any],
) -> None:
    frame = GOOD[shape]
    assert answers.parse(shape, frame) == frame
    assert answers.parse(shape, {**frame, "from_a_newer_server": {"x": 1}}) == frame


@pytest.mark.parametrize(
    ("shape", "field"),
    [(shape, field) for shape in SHAPES for field in _required(shape)],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_frame_missing_a_required_field_is_refused_naming_it(
    shape: type[Any], field: str
) -> None:
    frame = {k: v for k, v in GOOD[shape].items() if k != field}
    with pytest.raises(answers.ShapeError) as raised:
        answers.parse(shape, frame)
    assert raised.value.fields == (field,)


@pytest.mark.parametrize(
    ("shape", "field"),
    [(shape, field) for shape in SHAPES for field in sorted(GOOD[shape])],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_frame_with_a_field_of_the_wrong_type_is_refused_naming_it(
    shape: type[Any], field: str
) -> None:
    with pytest.raises(answers.ShapeError) as raised:
        answers.parse(shape, {**GOOD[shape], field: WRONG})
    assert raised.value.fields == (field,)


@pytest.mark.parametrize(
    ("shape", "frame", "bad"),
    [
        (
            conversations_answers.ConversationAnswer,
            {**GOOD[conversations_answers.ConversationAnswer], "conversation": {"kind": "room"}},
            (
                "conversation.conversation_id",
                "conversation.created_at",
                "conversation.last_seq",
                "conversation.log_seq",
                "conversation.members",
                "conversation.roster_version",
            ),
        ),
        (
            conversations_answers.MembershipLogPart,
            {
                **GOOD[conversations_answers.MembershipLogPart],
                "operations": [{"seq": True, "op": KEY}],
            },
            ("operations.0.seq",),
        ),
        (
            devices_answers.DevicesPart,
            {
                **GOOD[devices_answers.DevicesPart],
                "devices": [{"device_id": "d1", "status": "active"}],
            },
            ("devices.0.certificate",),
        ),
        (
            files_answers.FileUploadPartsPart,
            {**GOOD[files_answers.FileUploadPartsPart], "urls": [{"part": "1", "url": "u"}]},
            ("urls.0.part",),
        ),
    ],
)
def test_a_nested_entry_off_its_shape_is_refused_naming_its_path(
    shape: type[Any], frame: dict[str, Any], bad: tuple[str, ...]
) -> None:
    with pytest.raises(answers.ShapeError) as raised:
        answers.parse(shape, frame)
    assert raised.value.fields == bad


def test_an_enabled_retention_answer_without_its_identity_is_malformed_naming_what_is_missing() -> (
    None
):
    answer: Any = {"network_id": "n1", "enabled": True, "years": 7}
    with pytest.raises(MalformedFrame) as raised:
        fetch_retention(lambda: answer, "n1", IdentityTracker(), now=1)
    assert raised.value.fields == ("officer_identity", "certificate", "prekey")


def test_a_server_whose_info_is_off_its_shape_is_not_taken_for_a_sotto_server() -> None:
    def fetch(url: str) -> answers_http.InfoAnswer:
        return shaped(answers_http.InfoAnswer, "info", {"websocket": "ws://x", "audience": 3})

    with pytest.raises(ServerResolutionError, match="is this a Sotto server"):
        resolve_server("http://localhost:1", fetch)
