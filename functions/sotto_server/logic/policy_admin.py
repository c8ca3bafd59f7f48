"""The admin side of policy: documents, security groups, memberships, and who to tell.

Every change answers with the users whose effective policy it may have
moved; the handler pushes each of their online devices its new effective
policy (``policy`` frame), and the others read it on their next sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sotto.frames.requests import PolicySettingsRequest

from ..dal.directory import Conflict, DirectoryStore, GroupRecord
from .errors import ErrorCode, Refused
from .policy import EffectivePolicy, PolicyDocuments, combine, effective_policy

if TYPE_CHECKING:
    from sotto.frames.answers import PolicyFields
    from sotto.frames.answers_admin import (
        GroupCreatedAnswer,
        MemberRefusal,
        NetworkPolicyFields,
        PolicySetFields,
    )

__all__ = [
    "create_group",
    "effective_policies",
    "set_members",
    "set_policy",
    "show_policy",
    "user_policy",
]


def _network_exists(directory: DirectoryStore, network_id: str) -> None:
    if directory.get_network(network_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such network")


def _groups(directory: DirectoryStore, network_id: str) -> dict[str, GroupRecord]:
    return {group.name: group for group in directory.list_groups(network_id)}


def show_policy(directory: DirectoryStore, network_id: str) -> NetworkPolicyFields:
    _network_exists(directory, network_id)
    groups = _groups(directory, network_id)
    members: dict[str, list[str]] = {name: [] for name in groups}
    for name, user_id in directory.group_memberships(network_id):
        members.setdefault(name, []).append(user_id)
    documents = directory.policy_documents(network_id, ())
    return {
        "network_id": network_id,
        "version": documents.version,
        "network": dict(documents.network),
        "groups": [
            {"name": name, "policy": dict(groups[name].document), "members": members[name]}
            for name in sorted(groups)
        ],
    }


def _merged(document: dict[str, Any], request: PolicySettingsRequest) -> dict[str, Any]:
    merged = dict(document)
    for knob in sorted(request.model_fields_set):
        value = getattr(request, knob)
        if value is None:
            merged.pop(knob, None)
        else:
            merged[knob] = value
    return merged


def set_policy(
    directory: DirectoryStore,
    network_id: str,
    group: str | None,
    request: PolicySettingsRequest,
    now_ms: int,
) -> tuple[PolicySetFields, list[str]]:
    """Set knobs of the network default (``group`` None) or of a group.

    Returns the answer and the users it concerns (all of the network's, or the group's).
    """
    _network_exists(directory, network_id)
    if group is None:
        document = _merged(dict(directory.policy_documents(network_id, ()).network), request)
        directory.set_network_policy(network_id, document, now_ms)
        affected = [user_id for user_id, _handle, _status in directory.list_users(network_id)]
    else:
        existing = _groups(directory, network_id).get(group)
        if existing is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no security group {group!r} in this network")
        document = _merged(existing.document, request)
        try:
            directory.set_group_policy(network_id, group, document, now_ms)
        except Conflict:
            raise Refused(ErrorCode.NOT_FOUND, f"no security group {group!r}") from None
        affected = [user for _name, user in directory.group_memberships(network_id, group)]
    answer: PolicySetFields = {"network_id": network_id, "group": group, "policy": document}
    return answer, affected


def create_group(
    directory: DirectoryStore, network_id: str, name: str, now_ms: int
) -> GroupCreatedAnswer:
    try:
        directory.create_group(GroupRecord(network_id, name, {}, now_ms))
    except Conflict as conflict:
        if conflict.reason == "no_such_network":
            raise Refused(ErrorCode.NOT_FOUND, "no such network") from None
        raise Refused(ErrorCode.CONFLICT, f"security group {name!r} exists") from None
    return {"network_id": network_id, "group": name, "policy": {}, "members": []}


def set_members(
    directory: DirectoryStore,
    network_id: str,
    group: str,
    user_ids: Iterable[str],
    *,
    member: bool,
    now_ms: int,
) -> tuple[list[str], list[MemberRefusal]]:
    """Add users to (or remove them from) a group; each user is one transaction.

    Returns which users changed and which were refused (not in this network),
    so a partly wrong list still does what it can and says what it did not.
    """
    _network_exists(directory, network_id)
    if group not in _groups(directory, network_id):
        raise Refused(ErrorCode.NOT_FOUND, f"no security group {group!r} in this network")
    done: list[str] = []
    refused: list[MemberRefusal] = []
    for user_id in dict.fromkeys(user_ids):
        try:
            directory.set_group_member(network_id, group, user_id, member=member, now=now_ms)
        except Conflict as conflict:
            reason = (
                "no such user in this network"
                if conflict.reason == "no_such_user"
                else (f"no security group {group!r}")
            )
            refused.append({"user_id": user_id, "reason": reason})
            continue
        done.append(user_id)
    return done, refused


def user_policy(directory: DirectoryStore, user_id: str) -> PolicyFields:
    user = directory.get_user(user_id)
    if user is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such user")
    return effective_policy(directory, user.network_id, user_id, groups=user.groups).to_json()


def effective_policies(
    directory: DirectoryStore, network_id: str, user_ids: Iterable[str]
) -> list[EffectivePolicy]:
    """Many users' effective policies from three reads, whatever their number."""
    groups = _groups(directory, network_id)
    network = directory.policy_documents(network_id, ())
    memberships: dict[str, set[str]] = {}
    for name, user_id in directory.group_memberships(network_id):
        memberships.setdefault(user_id, set()).add(name)
    policies = []
    for user_id in dict.fromkeys(user_ids):
        documents = PolicyDocuments(
            network=network.network,
            groups={
                g: groups[g].document for g in sorted(memberships.get(user_id, ())) if g in groups
            },
            version=network.version,
        )
        policies.append(combine(network_id, user_id, documents))
    return policies
