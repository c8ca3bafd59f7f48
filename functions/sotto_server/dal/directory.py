"""The directory table: networks, invites, users, devices, prekeys, device links.

Single-table layout (access patterns in docs/architecture.md)::

    pk                         sk                 item
    NET#<network_id>           NETWORK            a network
    NET#<network_id>           USER#<user_id>     membership (handle, status): list users
    HANDLE#<network_id>#<h>    HANDLE             a handle's owner: unique per network
    INVITE#<sha256(code)>      INVITE             an invite; the code itself is never stored
    USER#<user_id>             USER               a user and their identity key
    USER#<user_id>             DEVICE#<device_id> a user's device and its certificate: list devices
    DEVICE#<device_id>         DEVICE             a device and its signing key (authorizer)
    DEVICE#<device_id>         SPK                the device's current signed prekey
    DEVICE#<device_id>         OTPK#<id:010d>     one unused one-time prekey
    DEVICE#<device_id>         OTPKCOUNT          how many of those remain
    LINK#<link_id>             LINK               a device-link request
    LINKCODE#<sha256(code)>    LINKCODE           the link a code opens; the code only as a hash
    NET#<network_id>           POLICY             the network's default policy; version of all
    NET#<network_id>           GROUP#<name>       a security group and its policy
    NET#<network_id>           GMEMBER#<g>#<u>    a group's member: list a group (the user's
                                                  item holds its groups too: ``groups``)

Every multi-item change is one TransactWriteItems, so a failure writes nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from ..logic.policy import PolicyDocuments, dump_document, load_document
from ._single_table import (
    Conflict,
    Item,
    SingleTableStore,
    b64_value,
    error_code,
    key,
    number,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        TransactWriteItemTypeDef,
    )

__all__ = [
    "MAX_FAILED_ENROLLMENTS",
    "MAX_ONE_TIME_PREKEYS",
    "Conflict",
    "DeviceRecord",
    "DeviceStatus",
    "DirectoryStore",
    "GroupRecord",
    "Invite",
    "LinkRecord",
    "Network",
    "UserRecord",
    "UserStatus",
]

# A device holds at most this many unused one-time prekeys (docs/protocol.md).
MAX_ONE_TIME_PREKEYS = 1000
# Enrollments with certificates that do not verify lock an invite after this many.
MAX_FAILED_ENROLLMENTS = 5
DeviceStatus = Literal["active", "revoked"]
UserStatus = Literal["active", "suspended"]
LinkState = Literal["open", "requested", "approved"]
_DEVICE_STATUSES: dict[str, DeviceStatus] = {"active": "active", "revoked": "revoked"}
_USER_STATUSES: dict[str, UserStatus] = {"active": "active", "suspended": "suspended"}
_LINK_STATES: dict[str, LinkState] = {
    "open": "open",
    "requested": "requested",
    "approved": "approved",
}


@dataclass(frozen=True)
class Network:
    network_id: str
    name: str
    created_at: int


@dataclass(frozen=True)
class GroupRecord:
    network_id: str
    name: str
    document: dict[str, Any]
    created_at: int


@dataclass(frozen=True)
class Invite:
    code_hash: str
    network_id: str
    user_id: str
    handle: str
    created_at: int
    expires_at: int
    used: bool
    # Enrollments refused for certificates that did not verify; at
    # MAX_FAILED_ENROLLMENTS the invite is locked.
    failed_attempts: int = 0
    revoked: bool = False
    # Set by a bulk invite: a name to show, and the security groups the user joins.
    display_name: str = ""
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    network_id: str
    handle: str
    status: UserStatus
    identity_key: bytes
    created_at: int
    # The security groups the user belongs to (their policies apply to it).
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    user_id: str
    network_id: str
    # DER SubjectPublicKeyInfo of the device's ECDSA P-384 signing key.
    signing_key: bytes
    status: DeviceStatus
    created_at: int
    # The identity-signed DeviceCertificate (wire bytes); empty for devices
    # seeded without one.
    certificate: bytes = b""


@dataclass(frozen=True)
class LinkRecord:
    link_id: str
    code_hash: str
    network_id: str
    user_id: str
    created_by: str
    created_at: int
    expires_at: int
    state: LinkState
    device_id: str = ""
    device_key: bytes = b""
    certificate: bytes = b""


def _s(item: Item, name: str) -> str:
    return item[name]["S"]


def _n(item: Item, name: str) -> int:
    return int(item[name]["N"])


def _bytes(item: Item, name: str) -> bytes:
    value = item.get(name)
    return base64.b64decode(value["S"]) if value else b""


class DirectoryStore(SingleTableStore):
    # -- reading -------------------------------------------------------------

    def get_network(self, network_id: str) -> Network | None:
        item = self._get(f"NET#{network_id}", "NETWORK")
        if item is None:
            return None
        return Network(network_id, _s(item, "name"), _n(item, "created_at"))

    def list_networks(self) -> list[Network]:
        # Networks are few (one per organisation unit); an index would cost
        # every write for a rare admin read, so this one admin listing scans.
        items: list[Item] = []
        args: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "sk = :sk",
            "ExpressionAttributeValues": {":sk": {"S": "NETWORK"}},
        }
        while True:
            page = self._client.scan(**args)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        networks = [
            Network(_s(i, "pk").removeprefix("NET#"), _s(i, "name"), _n(i, "created_at"))
            for i in items
        ]
        return sorted(networks, key=lambda n: (n.created_at, n.network_id))

    def get_invite(self, code_hash: str) -> Invite | None:
        item = self._get(f"INVITE#{code_hash}", "INVITE")
        if item is None:
            return None
        return Invite(
            code_hash=code_hash,
            network_id=_s(item, "network_id"),
            user_id=_s(item, "user_id"),
            handle=_s(item, "handle"),
            created_at=_n(item, "created_at"),
            expires_at=_n(item, "expires_at_ms"),
            used=item.get("used", {}).get("BOOL", False),
            failed_attempts=int(item.get("failed_attempts", {"N": "0"})["N"]),
            revoked=item.get("revoked", {}).get("BOOL", False),
            display_name=item.get("display_name", {}).get("S", ""),
            groups=frozenset(item.get("groups", {}).get("SS", [])),
        )

    def find_handle(self, network_id: str, handle: str) -> str | None:
        """The user id a handle of the network belongs to (reserved at its invite)."""
        item = self._get(f"HANDLE#{network_id}#{handle}", "HANDLE")
        return None if item is None else _s(item, "user_id")

    def get_user(self, user_id: str) -> UserRecord | None:
        item = self._get(f"USER#{user_id}", "USER")
        return None if item is None else _user(user_id, item)

    def get_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        """Many users in one request per 100 (rosters of large rooms)."""
        items = self._batch_get([(f"USER#{u}", "USER") for u in user_ids])
        return {
            pk.removeprefix("USER#"): _user(pk.removeprefix("USER#"), item)
            for (pk, _), item in items.items()
        }

    def list_users(self, network_id: str) -> list[tuple[str, str, UserStatus]]:
        """(user_id, handle, status) of every member of a network."""
        users = []
        for item in self._query(f"NET#{network_id}", "USER#"):
            status = _USER_STATUSES.get(_s(item, "status"), "suspended")
            users.append((_s(item, "sk").removeprefix("USER#"), _s(item, "handle"), status))
        return users

    def get_device(self, device_id: str) -> DeviceRecord | None:
        item = self._get(f"DEVICE#{device_id}", "DEVICE")
        return None if item is None else _device(device_id, item)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
        """Many devices in one request per 100 (rosters of large rooms)."""
        items = self._batch_get([(f"DEVICE#{d}", "DEVICE") for d in device_ids])
        return {
            pk.removeprefix("DEVICE#"): _device(pk.removeprefix("DEVICE#"), item)
            for (pk, _), item in items.items()
        }

    def device_owners(self, device_ids: Sequence[str]) -> dict[str, tuple[str, str, DeviceStatus]]:
        """``(user_id, network_id, status)`` of many devices, without their certificates."""
        items = self._batch_get(
            [(f"DEVICE#{d}", "DEVICE") for d in device_ids], ("user_id", "network_id", "status")
        )
        owners: dict[str, tuple[str, str, DeviceStatus]] = {}
        for (pk, _), item in items.items():
            device_id = pk.removeprefix("DEVICE#")
            status = _DEVICE_STATUSES.get(_s(item, "status"))
            if status is None:
                raise ValueError(f"device {device_id} has an unknown status")
            owners[device_id] = (_s(item, "user_id"), _s(item, "network_id"), status)
        return owners

    def get_device_and_user(
        self, device_id: str, user_id: str
    ) -> tuple[DeviceRecord | None, UserRecord | None]:
        """A device and a user in one consistent request (a frame's standing check)."""
        items = self._batch_get([(f"DEVICE#{device_id}", "DEVICE"), (f"USER#{user_id}", "USER")])
        device = items.get((f"DEVICE#{device_id}", "DEVICE"))
        user = items.get((f"USER#{user_id}", "USER"))
        return (
            None if device is None else _device(device_id, device),
            None if user is None else _user(user_id, user),
        )

    def list_devices(self, user_id: str) -> list[tuple[str, bytes, DeviceStatus]]:
        """(device_id, certificate, status) of every device a user ever had."""
        devices = []
        for item in self._query(f"USER#{user_id}", "DEVICE#"):
            status = _DEVICE_STATUSES.get(_s(item, "status"), "revoked")
            device_id = _s(item, "sk").removeprefix("DEVICE#")
            devices.append((device_id, _bytes(item, "certificate"), status))
        return devices

    def get_link(self, link_id: str) -> LinkRecord | None:
        item = self._get(f"LINK#{link_id}", "LINK")
        if item is None:
            return None
        return LinkRecord(
            link_id=link_id,
            code_hash=_s(item, "code_hash"),
            network_id=_s(item, "network_id"),
            user_id=_s(item, "user_id"),
            created_by=_s(item, "created_by"),
            created_at=_n(item, "created_at"),
            expires_at=_n(item, "expires_at_ms"),
            state=_LINK_STATES.get(_s(item, "state"), "open"),
            device_id=item.get("device_id", {}).get("S", ""),
            device_key=_bytes(item, "device_key"),
            certificate=_bytes(item, "certificate"),
        )

    def find_link(self, code_hash: str) -> str | None:
        """The link id behind a code hash (the hash is the lookup key for new devices)."""
        item = self._get(f"LINKCODE#{code_hash}", "LINKCODE")
        return None if item is None else _s(item, "link_id")

    # -- policy and security groups -------------------------------------------------

    def policy_documents(self, network_id: str, groups: Iterable[str]) -> PolicyDocuments:
        """The network default and the named groups' documents, in one consistent read."""
        wanted = sorted(groups)
        keys = [(f"NET#{network_id}", "POLICY")]
        keys += [(f"NET#{network_id}", f"GROUP#{name}") for name in wanted]
        items = self._batch_get(keys)
        network = items.get((f"NET#{network_id}", "POLICY"), {})
        documents = {
            name: load_document(item.get("policy", {}).get("S"))
            for name in wanted
            if (item := items.get((f"NET#{network_id}", f"GROUP#{name}"))) is not None
        }
        return PolicyDocuments(
            network=load_document(network.get("policy", {}).get("S")),
            groups=documents,
            version=int(network.get("version", {"N": "0"})["N"]),
        )

    def user_groups(self, user_id: str) -> frozenset[str] | None:
        user = self.get_user(user_id)
        return None if user is None else user.groups

    def list_groups(self, network_id: str) -> list[GroupRecord]:
        return [
            GroupRecord(
                network_id=network_id,
                name=_s(item, "sk").removeprefix("GROUP#"),
                document=load_document(item.get("policy", {}).get("S")),
                created_at=_n(item, "created_at"),
            )
            for item in self._query(f"NET#{network_id}", "GROUP#")
        ]

    def group_memberships(self, network_id: str, group: str | None = None) -> list[tuple[str, str]]:
        """(group, user_id) of one group's members, or of every group of the network."""
        prefix = "GMEMBER#" if group is None else f"GMEMBER#{group}#"
        found = []
        for item in self._query(f"NET#{network_id}", prefix):
            name, _, user_id = _s(item, "sk").removeprefix("GMEMBER#").partition("#")
            found.append((name, user_id))
        return found

    def _bump_policy_version(self, network_id: str, now: int) -> TransactWriteItemTypeDef:
        """Every policy or membership change moves the network's version (clients compare)."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": key(f"NET#{network_id}", "POLICY"),
                "UpdateExpression": "SET updated_at = :now ADD version :one",
                "ExpressionAttributeValues": {":now": number(now), ":one": number(1)},
            }
        }

    def set_network_policy(self, network_id: str, document: Mapping[str, Any], now: int) -> None:
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"NET#{network_id}", "NETWORK"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"NET#{network_id}", "POLICY"),
                        "UpdateExpression": "SET policy = :p, updated_at = :now ADD version :one",
                        "ExpressionAttributeValues": {
                            ":p": {"S": dump_document(document)},
                            ":now": number(now),
                            ":one": number(1),
                        },
                    }
                },
            ],
            {0: "no_such_network"},
        )

    def create_group(self, group: GroupRecord) -> None:
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"NET#{group.network_id}", "NETWORK"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"NET#{group.network_id}", f"GROUP#{group.name}"),
                            "policy": {"S": dump_document(group.document)},
                            "created_at": number(group.created_at),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ],
            {0: "no_such_network", 1: "group_exists"},
        )

    def set_group_policy(
        self, network_id: str, name: str, document: Mapping[str, Any], now: int
    ) -> None:
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"NET#{network_id}", f"GROUP#{name}"),
                        "UpdateExpression": "SET policy = :p",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeValues": {":p": {"S": dump_document(document)}},
                    }
                },
                self._bump_policy_version(network_id, now),
            ],
            {0: "no_such_group"},
        )

    def set_group_member(
        self, network_id: str, name: str, user_id: str, *, member: bool, now: int
    ) -> None:
        """Add a user of the network to a group (member=True) or take it out, atomically."""
        membership = key(f"NET#{network_id}", f"GMEMBER#{name}#{user_id}")
        write: TransactWriteItemTypeDef = (
            {"Put": {"TableName": self._table, "Item": {**membership, "added_at": number(now)}}}
            if member
            else {"Delete": {"TableName": self._table, "Key": membership}}
        )
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"NET#{network_id}", f"GROUP#{name}"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"USER#{user_id}", "USER"),
                        "UpdateExpression": f"{'ADD' if member else 'DELETE'} #g :g",
                        "ConditionExpression": "attribute_exists(pk) AND network_id = :n",
                        "ExpressionAttributeNames": {"#g": "groups"},
                        "ExpressionAttributeValues": {
                            ":g": {"SS": [name]},
                            ":n": {"S": network_id},
                        },
                    }
                },
                write,
                self._bump_policy_version(network_id, now),
            ],
            {0: "no_such_group", 1: "no_such_user"},
        )

    # -- prekeys --------------------------------------------------------------

    def signed_prekey(self, device_id: str) -> bytes | None:
        item = self._get(f"DEVICE#{device_id}", "SPK")
        return None if item is None else _bytes(item, "certificate")

    def count_one_time_prekeys(self, device_id: str) -> int:
        """Unused one-time prekeys, from a counter kept with every publish and take.

        Counting the items themselves would read them all (costly at 2 KB each).
        """
        item = self._get(f"DEVICE#{device_id}", "OTPKCOUNT")
        return 0 if item is None else _n(item, "remaining")

    def take_prekeys(
        self, device_ids: Sequence[str], *, cleanup: list[Callable[[], None]] | None = None
    ) -> dict[str, tuple[str, bytes, int]]:
        """One prekey per device: ``(kind, certificate, one-time prekeys left)``.

        A one-time prekey when the device has one left ("one_time": nobody
        else gets it), else its signed prekey ("signed"); devices with
        neither are missing from the answer. One-time prekey ids are
        published consecutively, so each device's counter names the next one
        to hand out: per 100 devices, one BatchGetItem of the counters, one
        transaction moving them on (each conditional on the value read, so
        two fetchers never get the same prekey; a device another fetcher
        moved first is read again and retried), one BatchGetItem of the
        prekeys won, one of the signed prekeys of the devices left without.
        The won prekeys' deletes are housekeeping (a counter never moves
        back): with ``cleanup`` they are queued there to run after the answer.
        """
        unique = list(dict.fromkeys(device_ids))
        answer: dict[str, tuple[str, bytes, int]] = {}
        deletes: list[Any] = []
        for start in range(0, len(unique), 100):
            answer.update(self._take_some(unique[start : start + 100], deletes))
        if cleanup is None:
            self._delete_all(deletes)
        elif deletes:
            cleanup.append(lambda: self._delete_all(deletes))
        return answer

    def _delete_all(self, deletes: Sequence[Any]) -> None:
        for start in range(0, len(deletes), 25):
            self._batch_write(list(deletes[start : start + 25]))

    def _take_some(
        self, devices: Sequence[str], deletes: list[Any]
    ) -> dict[str, tuple[str, bytes, int]]:
        read = self._batch_get([(f"DEVICE#{d}", "OTPKCOUNT") for d in devices])
        counters = {d: read.get((f"DEVICE#{d}", "OTPKCOUNT")) for d in devices}
        taken: dict[str, bytes] = {}
        want = [d for d in devices if _available(counters[d])]
        for _ in range(8):
            planned = {d: _n(counters[d] or {}, "next_id") for d in want}
            moved = self._move_counters(planned)
            taken.update(self._fetch_won({d: planned[d] for d in moved}, deletes))
            lost = [d for d in want if d not in moved]
            if not lost:
                break
            # Another fetcher moved these first: read where they are now and try again.
            fresh = self._batch_get([(f"DEVICE#{d}", "OTPKCOUNT") for d in lost])
            counters.update({d: fresh.get((f"DEVICE#{d}", "OTPKCOUNT")) for d in lost})
            want = [d for d in lost if _available(counters[d])]
        # Signed prekeys only for the devices without a one-time prekey for us.
        rest = [d for d in devices if d not in taken]
        signed = self._batch_get([(f"DEVICE#{d}", "SPK") for d in rest]) if rest else {}
        answer: dict[str, tuple[str, bytes, int]] = {}
        for device_id in devices:
            if device_id in taken:
                left = max(0, _n_or_zero(counters[device_id]) - 1)
                answer[device_id] = ("one_time", taken[device_id], left)
            elif (spk := signed.get((f"DEVICE#{device_id}", "SPK"))) is not None:
                answer[device_id] = ("signed", _bytes(spk, "certificate"), 0)
        return answer

    def _fetch_won(self, ids: Mapping[str, int], deletes: list[Any]) -> dict[str, bytes]:
        """The one-time prekeys whose ids this caller just won; their deletes are queued."""
        if not ids:
            return {}
        keys = {d: (f"DEVICE#{d}", f"OTPK#{prekey_id:010d}") for d, prekey_id in ids.items()}
        items = self._batch_get(list(keys.values()))
        found = {d: _bytes(items[k], "certificate") for d, k in keys.items() if k in items}
        deletes.extend({"DeleteRequest": {"Key": key(*keys[d])}} for d in found)
        return found

    def _move_counters(self, planned: Mapping[str, int]) -> set[str]:
        """Advance each device's next id past the planned one, all in one transaction.

        Returns the devices whose counter moved: a counter someone else moved
        first cancels the transaction, which is tried again without it.
        """
        pending = dict(planned)
        while pending:
            order = sorted(pending)
            items: list[TransactWriteItemTypeDef] = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"DEVICE#{d}", "OTPKCOUNT"),
                        "UpdateExpression": "SET next_id = :after ADD remaining :minus_one",
                        "ConditionExpression": "next_id = :id AND remaining > :zero",
                        "ExpressionAttributeValues": {
                            ":after": number(pending[d] + 1),
                            ":id": number(pending[d]),
                            ":minus_one": number(-1),
                            ":zero": number(0),
                        },
                    }
                }
                for d in order
            ]
            lost = self._transact_losers(items)
            if not lost:
                return set(pending)
            for index in lost:
                pending.pop(order[index])
        return set()

    def put_prekeys(
        self,
        device_id: str,
        signed_prekey: tuple[int, int, bytes] | None,
        one_time_prekeys: Sequence[tuple[int, bytes]],
        now: int,
    ) -> None:
        """Publish, all or nothing. ``signed_prekey`` is (prekey_id, expires_at, cert).

        One-time prekey ids are consecutive and follow on from the last ones
        published: Conflict("prekey_ids_do_not_follow") otherwise, or
        "too_many_prekeys" past the cap.
        """
        pk = f"DEVICE#{device_id}"
        items: list[TransactWriteItemTypeDef] = []
        if signed_prekey is not None:
            prekey_id, expires_at, cert = signed_prekey
            items.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(pk, "SPK"),
                            "prekey_id": number(prekey_id),
                            "expires_at_ms": number(expires_at),
                            "certificate": b64_value(cert),
                            "published_at": number(now),
                        },
                    }
                }
            )
        ids = [prekey_id for prekey_id, _ in one_time_prekeys]
        if one_time_prekeys:
            if ids != list(range(ids[0], ids[0] + len(ids))):
                raise ValueError("one-time prekey ids are published consecutively")
            # The protocol caps what a device holds: the count may not pass it. Ids
            # follow on from those published before, so the counter also says
            # which one is handed out next (take_prekeys).
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(pk, "OTPKCOUNT"),
                        "UpdateExpression": (
                            "ADD remaining :n "
                            "SET top_id = :top, next_id = if_not_exists(next_id, :low)"
                        ),
                        "ConditionExpression": (
                            "(attribute_not_exists(remaining) OR remaining <= :room) "
                            "AND (attribute_not_exists(top_id) OR top_id = :before)"
                        ),
                        "ExpressionAttributeValues": {
                            ":n": number(len(one_time_prekeys)),
                            ":room": number(MAX_ONE_TIME_PREKEYS - len(one_time_prekeys)),
                            ":top": number(ids[-1]),
                            ":low": number(ids[0]),
                            ":before": number(ids[0] - 1),
                        },
                    }
                }
            )
        for prekey_id, cert in one_time_prekeys:
            items.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(pk, f"OTPK#{prekey_id:010d}"),
                            "certificate": b64_value(cert),
                            "published_at": number(now),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        if len(items) > 100 or len(one_time_prekeys) > MAX_ONE_TIME_PREKEYS:
            raise ValueError("at most 98 one-time prekeys per publish")
        counter = 1 if signed_prekey is not None else 0
        reasons = {i: "prekey_id_reused" for i in range(len(items))}
        if one_time_prekeys:
            reasons[counter] = "counter"
        try:
            self._transact(items, reasons)
        except Conflict as conflict:
            if conflict.reason != "counter":
                raise
            state = self._get(pk, "OTPKCOUNT") or {}
            held = _n_or_zero(state)
            if held + len(ids) > MAX_ONE_TIME_PREKEYS:
                raise Conflict("too_many_prekeys") from None
            raise Conflict("prekey_ids_do_not_follow") from None

    def signed_prekey_expiry(self, device_id: str) -> int | None:
        item = self._get(f"DEVICE#{device_id}", "SPK")
        return None if item is None else _n(item, "expires_at_ms")

    # -- writing ----------------------------------------------------------------

    def create_network(self, network: Network) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={
                **key(f"NET#{network.network_id}", "NETWORK"),
                "name": {"S": network.name},
                "created_at": number(network.created_at),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def create_invite(self, invite: Invite, ttl_expires_at: int) -> None:
        """Store an invite and reserve its handle in the network, atomically."""
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"NET#{invite.network_id}", "NETWORK"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"HANDLE#{invite.network_id}#{invite.handle}", "HANDLE"),
                            "user_id": {"S": invite.user_id},
                            "created_at": number(invite.created_at),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _invite_item(invite, ttl_expires_at),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": self._pending_item(invite, ttl_expires_at),
                    }
                },
            ],
            {0: "no_such_network", 1: "handle_taken", 2: "invite_exists"},
        )

    def _pending_item(self, invite: Invite, ttl_expires_at: int) -> Item:
        """The network's pointer to a pending invite (listing, revoking, reissuing by user)."""
        return {
            **key(f"NET#{invite.network_id}", f"INVITE#{invite.user_id}"),
            "code_hash": {"S": invite.code_hash},
            "handle": {"S": invite.handle},
            "created_at": number(invite.created_at),
            "expires_at_ms": number(invite.expires_at),
            "expires_at": number(ttl_expires_at),
        }

    def pending_invites(self, network_id: str) -> list[Invite]:
        """The network's invites not yet used (the pointer is removed on enrollment)."""
        found = []
        for item in self._query(f"NET#{network_id}", "INVITE#"):
            invite = self.get_invite(_s(item, "code_hash"))
            if invite is not None and not invite.used:
                found.append(invite)
        return found

    def pending_invite(self, network_id: str, user_id: str) -> Invite | None:
        item = self._get(f"NET#{network_id}", f"INVITE#{user_id}")
        if item is None:
            return None
        invite = self.get_invite(_s(item, "code_hash"))
        return invite if invite is not None and not invite.used else None

    def _revoke_unused(self, invite: Invite) -> TransactWriteItemTypeDef:
        """Mark an invite revoked, on condition that it is still unused."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": key(f"INVITE#{invite.code_hash}", "INVITE"),
                "UpdateExpression": "SET revoked = :true",
                "ConditionExpression": "attribute_exists(pk) AND used = :false",
                "ExpressionAttributeValues": {":true": {"BOOL": True}, ":false": {"BOOL": False}},
            }
        }

    def revoke_invite(self, invite: Invite) -> None:
        """Make an unused invite unusable and forget its pointer and handle reservation."""
        self._transact(
            [
                self._revoke_unused(invite),
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": key(f"NET#{invite.network_id}", f"INVITE#{invite.user_id}"),
                    }
                },
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": key(f"HANDLE#{invite.network_id}#{invite.handle}", "HANDLE"),
                        "ConditionExpression": "user_id = :u",
                        "ExpressionAttributeValues": {":u": {"S": invite.user_id}},
                    }
                },
            ],
            {0: "invite_used", 2: "handle_moved"},
        )

    def reissue_invite(self, old: Invite, new: Invite, ttl_expires_at: int) -> None:
        """Replace an unused invite by a new code for the same user and handle, atomically."""
        self._transact(
            [
                self._revoke_unused(old),
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _invite_item(new, ttl_expires_at),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": self._pending_item(new, ttl_expires_at),
                    }
                },
            ],
            {0: "invite_used", 1: "invite_exists"},
        )

    def fail_enrollment(self, invite: Invite) -> int:
        """Count an enrollment refused for its certificates; returns the count now."""
        answer = self._client.update_item(
            TableName=self._table,
            Key=key(f"INVITE#{invite.code_hash}", "INVITE"),
            UpdateExpression="ADD failed_attempts :one",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":one": number(1)},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer.get("Attributes", {}).get("failed_attempts", {"N": "0"})["N"])

    def enroll(
        self,
        invite: Invite,
        user: UserRecord,
        device: DeviceRecord,
        signed_prekey: tuple[int, int, bytes],
        now: int,
    ) -> None:
        """Consume the invite and create the user, its first device and signed prekey.

        One transaction, conditional on the invite being unused and unexpired
        at ``now``: of two racing enrollments with one code, exactly one wins.
        """
        prekey_id, prekey_expires, prekey_cert = signed_prekey
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"INVITE#{invite.code_hash}", "INVITE"),
                        "UpdateExpression": "SET used = :true, used_at = :now",
                        "ConditionExpression": (
                            "attribute_exists(pk) AND used = :false AND expires_at_ms > :now "
                            "AND attribute_not_exists(revoked) "
                            "AND (attribute_not_exists(failed_attempts) OR failed_attempts < :max)"
                        ),
                        "ExpressionAttributeValues": {
                            ":true": {"BOOL": True},
                            ":false": {"BOOL": False},
                            ":now": number(now),
                            ":max": number(MAX_FAILED_ENROLLMENTS),
                        },
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"USER#{user.user_id}", "USER"),
                            "network_id": {"S": user.network_id},
                            "handle": {"S": user.handle},
                            "status": {"S": user.status},
                            "identity_key": b64_value(user.identity_key),
                            "created_at": number(user.created_at),
                            **({"groups": {"SS": sorted(invite.groups)}} if invite.groups else {}),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"NET#{user.network_id}", f"USER#{user.user_id}"),
                            "handle": {"S": user.handle},
                            "status": {"S": user.status},
                        },
                    }
                },
                *self._device_puts(device),
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"DEVICE#{device.device_id}", "SPK"),
                            "prekey_id": number(prekey_id),
                            "expires_at_ms": number(prekey_expires),
                            "certificate": b64_value(prekey_cert),
                            "published_at": number(now),
                        },
                    }
                },
                # The groups a bulk invite named: joined as the user comes to exist.
                *self._join_groups(user, sorted(invite.groups), now),
            ],
            {0: "invite_unusable", 1: "user_exists", 3: "device_exists"},
        )

    def _join_groups(
        self, user: UserRecord, groups: list[str], now: int
    ) -> list[TransactWriteItemTypeDef]:
        if not groups:
            return []
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"NET#{user.network_id}", f"GMEMBER#{g}#{user.user_id}"),
                        "added_at": number(now),
                    },
                }
            }
            for g in groups
        ]
        return [*items, self._bump_policy_version(user.network_id, now)]

    def _device_puts(self, device: DeviceRecord) -> list[TransactWriteItemTypeDef]:
        return [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"DEVICE#{device.device_id}", "DEVICE"),
                        "user_id": {"S": device.user_id},
                        "network_id": {"S": device.network_id},
                        "signing_key": b64_value(device.signing_key),
                        "certificate": b64_value(device.certificate),
                        "status": {"S": device.status},
                        "created_at": number(device.created_at),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"USER#{device.user_id}", f"DEVICE#{device.device_id}"),
                        "certificate": b64_value(device.certificate),
                        "status": {"S": device.status},
                        "created_at": number(device.created_at),
                    },
                }
            },
        ]

    def put_device(self, device: DeviceRecord) -> None:
        """Write a device (both its items); refuses to overwrite one that exists."""
        self._transact(self._device_puts(device), {0: "device_exists"})

    def set_user_status(self, user: UserRecord, status: UserStatus) -> None:
        values = {":s": {"S": status}}
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"USER#{user.user_id}", "USER"),
                        "UpdateExpression": "SET #s = :s",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": values,
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"NET#{user.network_id}", f"USER#{user.user_id}"),
                        "UpdateExpression": "SET #s = :s",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": values,
                    }
                },
            ],
            {0: "no_such_user"},
        )

    def revoke_device(self, device: DeviceRecord, now: int) -> None:
        """Mark a device revoked (the first revocation's time is kept).

        Every call changes the device item (``revocations`` counts them), so
        each one, a repeat included, reaches the directory stream and the
        roster work runs again.
        """
        values: Mapping[str, AttributeValueTypeDef] = {
            ":s": {"S": "revoked"},
            ":now": number(now),
            ":one": number(1),
        }
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"DEVICE#{device.device_id}", "DEVICE"),
                        "UpdateExpression": (
                            "SET #s = :s, revoked_at = if_not_exists(revoked_at, :now) "
                            "ADD revocations :one"
                        ),
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": values,
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"USER#{device.user_id}", f"DEVICE#{device.device_id}"),
                        "UpdateExpression": (
                            "SET #s = :s, revoked_at = if_not_exists(revoked_at, :now)"
                        ),
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":s": values[":s"], ":now": values[":now"]},
                    }
                },
            ],
            {0: "no_such_device"},
        )

    def create_link(self, link: LinkRecord, ttl_expires_at: int) -> None:
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"LINK#{link.link_id}", "LINK"),
                            "code_hash": {"S": link.code_hash},
                            "network_id": {"S": link.network_id},
                            "user_id": {"S": link.user_id},
                            "created_by": {"S": link.created_by},
                            "created_at": number(link.created_at),
                            "expires_at": number(ttl_expires_at),
                            "expires_at_ms": number(link.expires_at),
                            "state": {"S": "open"},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **key(f"LINKCODE#{link.code_hash}", "LINKCODE"),
                            "link_id": {"S": link.link_id},
                            "expires_at": number(ttl_expires_at),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ],
            {0: "link_exists", 1: "link_exists"},
        )

    def request_link(self, link_id: str, device_id: str, device_key: bytes, now: int) -> None:
        """Attach the new device to an open, unexpired link (once)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"LINK#{link_id}", "LINK"),
                UpdateExpression="SET #st = :requested, device_id = :d, device_key = :k",
                ConditionExpression="#st = :open AND expires_at_ms > :now",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={
                    ":requested": {"S": "requested"},
                    ":open": {"S": "open"},
                    ":d": {"S": device_id},
                    ":k": b64_value(device_key),
                    ":now": number(now),
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise Conflict("link_unusable") from None
            raise

    def device_slot(self, user_id: str) -> int:
        """The version of the user's device count (``approve_link``), 0 before the first."""
        item = self._get(f"USER#{user_id}", "DEVICESLOT")
        return 0 if item is None else int(item["version"]["N"])

    def approve_link(
        self,
        link: LinkRecord,
        device: DeviceRecord,
        approver_device_id: str,
        now: int,
        *,
        slot: int | None = None,
    ) -> None:
        """Register the linked device and mark the link approved, atomically.

        Conditional on the approving device and its user still being active
        when the transaction commits: a revocation or suspension that lands
        while the approval is in flight makes it fail, never the reverse.
        With ``slot`` (the ``device_slot`` read before the devices were
        counted against a cap), it also moves the slot on from that version:
        of two approvals racing past the same count, the second fails
        (``devices_changed``) instead of both passing the cap.
        """
        if slot is None:
            slot_moves: list[TransactWriteItemTypeDef] = []
        else:
            slot_moves = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"USER#{device.user_id}", "DEVICESLOT"),
                        "UpdateExpression": "SET version = :next",
                        "ConditionExpression": (
                            "attribute_not_exists(version)" if slot == 0 else "version = :v"
                        ),
                        "ExpressionAttributeValues": {
                            ":next": number(slot + 1),
                            **({":v": number(slot)} if slot else {}),
                        },
                    }
                }
            ]
        self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"DEVICE#{approver_device_id}", "DEVICE"),
                        "ConditionExpression": "#s = :active AND user_id = :u",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":active": {"S": "active"},
                            ":u": {"S": device.user_id},
                        },
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": key(f"USER#{device.user_id}", "USER"),
                        "ConditionExpression": "#s = :active",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":active": {"S": "active"}},
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"LINK#{link.link_id}", "LINK"),
                        "UpdateExpression": "SET #st = :approved, certificate = :c",
                        "ConditionExpression": (
                            "#st = :requested AND device_id = :d AND expires_at_ms > :now"
                        ),
                        "ExpressionAttributeNames": {"#st": "state"},
                        "ExpressionAttributeValues": {
                            ":approved": {"S": "approved"},
                            ":requested": {"S": "requested"},
                            ":c": b64_value(device.certificate),
                            ":d": {"S": device.device_id},
                            ":now": number(now),
                        },
                    }
                },
                *slot_moves,
                *self._device_puts(device),
            ],
            {
                0: "approver_not_active",
                1: "user_not_active",
                2: "link_unusable",
                3: "devices_changed" if slot_moves else "device_exists",
                4: "device_exists",
            },
        )


def _invite_item(invite: Invite, ttl_expires_at: int) -> Item:
    item: Item = {
        **key(f"INVITE#{invite.code_hash}", "INVITE"),
        "network_id": {"S": invite.network_id},
        "user_id": {"S": invite.user_id},
        "handle": {"S": invite.handle},
        "created_at": number(invite.created_at),
        # Seconds for TTL; the exact expiry is checked on use.
        "expires_at": number(ttl_expires_at),
        "expires_at_ms": number(invite.expires_at),
        "used": {"BOOL": False},
    }
    if invite.display_name:
        item["display_name"] = {"S": invite.display_name}
    if invite.groups:
        item["groups"] = {"SS": sorted(invite.groups)}
    return item


def _available(counter: Item | None) -> bool:
    """Whether a device's counter says a one-time prekey is left to hand out."""
    if counter is None or "next_id" not in counter or _n_or_zero(counter) <= 0:
        return False
    return _n(counter, "next_id") <= _n(counter, "top_id")


def _n_or_zero(item: Item | None) -> int:
    return 0 if item is None else int(item.get("remaining", {"N": "0"})["N"])


def _user(user_id: str, item: Item) -> UserRecord:
    status = _USER_STATUSES.get(_s(item, "status"))
    if status is None:
        raise ValueError(f"user {user_id} has an unknown status")
    return UserRecord(
        user_id=user_id,
        network_id=_s(item, "network_id"),
        handle=_s(item, "handle"),
        status=status,
        identity_key=_bytes(item, "identity_key"),
        created_at=_n(item, "created_at"),
        groups=frozenset(item.get("groups", {}).get("SS", [])),
    )


def _device(device_id: str, item: Item) -> DeviceRecord:
    status = _DEVICE_STATUSES.get(_s(item, "status"))
    if status is None:
        raise ValueError(f"device {device_id} has an unknown status")
    return DeviceRecord(
        device_id=device_id,
        user_id=_s(item, "user_id"),
        network_id=_s(item, "network_id"),
        signing_key=_bytes(item, "signing_key"),
        status=status,
        created_at=_n(item, "created_at"),
        certificate=_bytes(item, "certificate"),
    )
