"""Prekeys and key bundles over real sockets: publish, fetch, consume once, fall back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate, PrekeyKind
from sotto.protocol.keys import IdentityPublicKey
from tests.support.stack import Socket, b64, publish_prekeys, seed_device, unb64


def test_published_prekeys_are_counted(stack, device):
    with Socket(stack, device) as socket:
        answer = publish_prekeys(socket, 45, signed=True)
        assert answer == {"action": "prekeys_published", "id": answer["id"], "one_time_prekeys": 45}
        status = socket.request("prekey_status")
    assert status["one_time_prekeys"] == 45
    assert status["signed_prekey_expires_at"] > time.time() * 1000


def wanted(*devices) -> list[dict[str, str]]:
    return [{"user_id": d.user_id, "device_id": d.device_id} for d in devices]


def test_bundles_verify_and_each_one_time_prekey_is_given_once(stack):
    owner, fetcher = seed_device(stack), seed_device(stack)
    with Socket(stack, owner) as socket:
        publish_prekeys(socket, 3)
    seen = []
    assert owner.secrets is not None
    certificate = owner.secrets.certificate
    with Socket(stack, fetcher) as socket:
        for _ in range(3):
            (part,) = socket.answers("fetch_bundles", devices=wanted(owner))
            (bundle,) = part["bundles"]
            assert bundle["kind"] == "one_time"
            one_time = PrekeyCertificate.parse(unb64(bundle["prekey"]))
            one_time.verify(certificate, now=int(time.time() * 1000))
            assert one_time.kind == PrekeyKind.ONE_TIME
            seen.append(one_time.prekey_id)
        (part,) = socket.answers("fetch_bundles", devices=wanted(owner))
    assert len(set(seen)) == 3
    # None left: the bundle falls back to the signed prekey.
    (bundle,) = part["bundles"]
    assert bundle["kind"] == "signed"
    assert PrekeyCertificate.parse(unb64(bundle["prekey"])).kind == PrekeyKind.SIGNED


def test_one_fetch_serves_many_devices_and_names_those_it_cannot(stack):
    owners = [seed_device(stack) for _ in range(4)]
    fetcher = seed_device(stack)
    for owner in owners[:2]:
        with Socket(stack, owner) as socket:
            publish_prekeys(socket, 2)
    revoked = seed_device(stack, status="revoked")
    ghost = {"user_id": owners[0].user_id, "device_id": owners[1].device_id}  # not his device
    with Socket(stack, fetcher) as socket:
        parts = socket.answers("fetch_bundles", devices=[*wanted(*owners, revoked), ghost])
    bundles = {b["device_id"]: b["kind"] for p in parts for b in p["bundles"]}
    assert bundles == {
        owners[0].device_id: "one_time",
        owners[1].device_id: "one_time",
        owners[2].device_id: "signed",
        owners[3].device_id: "signed",
    }
    unavailable = [(u["device_id"], u["reason"]) for p in parts for u in p["unavailable"]]
    assert sorted(unavailable) == sorted(
        [(revoked.device_id, "revoked"), (owners[1].device_id, "unknown")]
    )


def test_owner_is_told_to_replenish_when_prekeys_run_low(stack):
    owner, fetcher = seed_device(stack), seed_device(stack)
    with Socket(stack, owner) as owner_socket, Socket(stack, fetcher) as fetcher_socket:
        publish_prekeys(owner_socket, 2)
        fetcher_socket.answers("fetch_bundles", devices=wanted(owner))
        notice = owner_socket.push("prekeys_low")
    assert notice == {"action": "prekeys_low", "one_time_prekeys": 1}


def test_racing_fetchers_never_share_a_one_time_prekey(stack):
    owner = seed_device(stack)
    fetchers = [seed_device(stack) for _ in range(6)]
    with Socket(stack, owner) as socket:
        publish_prekeys(socket, 4)

    def fetch(device) -> str | None:
        with Socket(stack, device) as socket:
            (part,) = socket.answers("fetch_bundles", devices=wanted(owner))
            (bundle,) = part["bundles"]
            return str(bundle["prekey"]) if bundle["kind"] == "one_time" else None

    with ThreadPoolExecutor(max_workers=6) as pool:
        given = list(pool.map(fetch, fetchers))
    handed_out = [g for g in given if g is not None]
    assert len(handed_out) == 4
    assert len(set(handed_out)) == 4
    with Socket(stack, owner) as socket:
        assert socket.request("prekey_status")["one_time_prekeys"] == 0


def test_a_device_never_holds_more_than_1000_one_time_prekeys(stack):
    device = seed_device(stack)
    assert device.secrets is not None
    with Socket(stack, device) as socket:
        publish_prekeys(socket, 1000)
        # A hostile client forgets a private key locally to sign a 1001st prekey.
        device.secrets.one_time_prekeys.pop(next(iter(device.secrets.one_time_prekeys)))
        answer = publish_prekeys(socket, 1)
        assert answer["code"] == "conflict"
        assert "at most 1000" in answer["message"]
        assert socket.request("prekey_status")["one_time_prekeys"] == 1000


def test_list_devices_gives_certificates_that_verify(stack, device):
    with Socket(stack, device) as socket:
        answer = socket.request("list_devices", user_id=device.user_id)
    identity = IdentityPublicKey.parse(unb64(answer["identity_key"]))
    (listed,) = answer["devices"]
    assert listed["status"] == "active"
    DeviceCertificate.parse(unb64(listed["certificate"])).verify(
        identity, now=int(time.time() * 1000)
    )


def test_reused_prekey_id_is_a_conflict_and_writes_nothing(stack, device):
    with Socket(stack, device) as socket:
        publish_prekeys(socket, 2)
        assert device.secrets is not None
        again = [b64(cert.serialize()) for _, cert in device.secrets.one_time_prekeys.values()]
        fresh = device.secrets.new_one_time_prekeys(1, now=int(time.time() * 1000))
        answer = socket.request(
            "publish_prekeys", one_time_prekeys=[b64(fresh[0].serialize()), *again]
        )
        assert answer["code"] == "conflict"
        assert socket.request("prekey_status")["one_time_prekeys"] == 2


def test_signed_prekey_published_as_one_time_is_refused(stack, device):
    assert device.secrets is not None
    signed = b64(device.secrets.current_signed_prekey().serialize())
    with Socket(stack, device) as socket:
        answer = socket.request("publish_prekeys", one_time_prekeys=[signed])
        assert answer["code"] == "invalid_certificate"
        assert socket.request("prekey_status")["one_time_prekeys"] == 0


def test_large_room_of_devices_pages_bundles_under_the_frame_limit(stack):
    # One user with many devices is rare; paging is proven on the bundle
    # builder directly, where the size of each page can be checked.
    from sotto.frames import MAX_ANSWER_BYTES, paginate

    entries = [{"device_id": f"d{i}", "certificate": "x" * 7000} for i in range(40)]
    pages = paginate({"action": "bundles", "id": "r"}, "bundles", entries)
    assert len(pages) > 1
    assert [p["part"] for p in pages] == list(range(len(pages)))
    assert [p["final"] for p in pages] == [False] * (len(pages) - 1) + [True]
    assert sum(len(p["bundles"]) for p in pages) == 40
    import json

    assert all(len(json.dumps(p)) < MAX_ANSWER_BYTES for p in pages)


def test_directory_reads_many_devices_in_batches_of_a_hundred(stack):
    from sotto_server.dal.directory import DirectoryStore

    enrolled = [seed_device(stack) for _ in range(3)]
    store = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    wanted = [f"dev-missing-{i}" for i in range(150)] + [d.device_id for d in enrolled]
    found = store.get_devices(wanted)
    assert sorted(found) == sorted(d.device_id for d in enrolled)
    users = store.get_users([d.user_id for d in enrolled] * 2)
    assert sorted(users) == sorted(d.user_id for d in enrolled)


def test_one_time_prekeys_are_published_consecutively(stack):
    device = seed_device(stack)
    assert device.secrets is not None
    now = int(time.time() * 1000)
    first, _second, third = device.secrets.new_one_time_prekeys(3, now=now)
    with Socket(stack, device) as socket:
        gap = socket.request(
            "publish_prekeys", one_time_prekeys=[b64(first.serialize()), b64(third.serialize())]
        )
        assert gap["code"] == "bad_request"
        assert "consecutive" in gap["message"]
        ok = socket.request("publish_prekeys", one_time_prekeys=[b64(first.serialize())])
        assert ok["one_time_prekeys"] == 1
        skipping = socket.request("publish_prekeys", one_time_prekeys=[b64(third.serialize())])
        assert skipping["code"] == "conflict"
        assert "follow on" in skipping["message"]
        again = socket.request("publish_prekeys", one_time_prekeys=[b64(first.serialize())])
        assert again["code"] == "conflict"
        assert socket.request("prekey_status")["one_time_prekeys"] == 1
