"""A minimal messaging peer for server tests: one device, the protocol engine, a socket.

The client package has the full SDK; these tests drive the server's routes
directly so each server rule can be checked on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.content import Text
from sotto.protocol.conversation import Conversation, LocalDevice, Member, MessageTimers
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.safety import IdentityTracker
from tests.support.stack import SeededDevice, Socket, Stack, b64, publish_prekeys, unb64


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Peer:
    """One enrolled device with an open socket and its conversations' engine state."""

    stack: Stack
    device: SeededDevice
    socket: Socket
    conversations: dict[str, Conversation] = field(default_factory=dict)

    @classmethod
    def open(cls, stack: Stack, device: SeededDevice, prekeys: int = 20) -> Peer:
        socket = Socket(stack, device)
        publish_prekeys(socket, prekeys)
        return cls(stack, device, socket)

    def close(self) -> None:
        self.socket.close()

    @property
    def local(self) -> LocalDevice:
        assert self.device.secrets is not None
        assert self.device.identity is not None
        if not hasattr(self, "_local"):
            self._local = LocalDevice(
                self.device.secrets, self.device.identity.public, IdentityTracker()
            )
        return self._local

    def members(self, cid: str) -> list[Member]:
        parts = self.socket.answers("conversation_devices", conversation_id=cid)
        identities = {
            m["user_id"]: IdentityPublicKey.parse(unb64(m["identity_key"]))
            for part in parts
            for m in part["members"]
        }
        return [
            Member(DeviceCertificate.parse(unb64(d["certificate"])), identities[d["user_id"]])
            for part in parts
            for d in part["devices"]
        ]

    def join(self, cid: str) -> Conversation:
        conversation = Conversation.create(cid, self.local, self.members(cid), now=now_ms())
        self.conversations[cid] = conversation
        return conversation

    def refresh(self, cid: str) -> None:
        self.conversations[cid].set_members(self.members(cid), now=now_ms())

    def prekeys_for(self, cid: str) -> dict[tuple[str, str], PrekeyCertificate]:
        needed = self.conversations[cid].prekeys_needed(now=now_ms())
        prekeys: dict[tuple[str, str], PrekeyCertificate] = {}
        if not needed:
            return prekeys
        devices = [{"user_id": u, "device_id": d} for u, d in sorted(needed)]
        for part in self.socket.answers("fetch_bundles", devices=devices):
            for bundle in part["bundles"]:
                address = (bundle["user_id"], bundle["device_id"])
                prekeys[address] = PrekeyCertificate.parse(unb64(bundle["prekey"]))
        return prekeys

    def send(
        self, cid: str, text: str, *, timers: MessageTimers | None = None, distribute: bool = True
    ) -> dict[str, Any]:
        conversation = self.conversations[cid]
        outgoing = conversation.prepare_send(
            Text(text), now=now_ms(), timers=timers, prekeys=self.prekeys_for(cid)
        )
        if outgoing.distributions and distribute:
            for start in range(0, len(outgoing.distributions), 40):
                batch = outgoing.distributions[start : start + 40]
                answer = self.socket.request(
                    "distribute",
                    conversation_id=cid,
                    chain_id=b64(outgoing.header.chain_id),
                    distributions=[b64(d.data) for d in batch],
                )
                assert answer["action"] == "distributed", answer
        self.last_envelope = outgoing.envelope
        return self.socket.request("send", conversation_id=cid, envelope=b64(outgoing.envelope))

    def sync(self) -> list[tuple[str, int, str]]:
        """Sync everything, decrypt, ack; returns (conversation, seq, text) in order."""
        received: list[tuple[str, int, str]] = []
        resume: dict[str, str] = {}
        while True:
            parts = self.socket.answers("sync", **resume)
            resume = {"resume": parts[-1]["resume"]} if "resume" in parts[-1] else {}
            mail_ids: list[str] = []
            through: dict[str, int] = {}
            for part in parts:
                through.update(part["through"])
                for mail in part["mail"]:
                    conversation = self.conversations.get(mail["conversation_id"])
                    if conversation is not None and mail["kind"] == "distribution":
                        conversation.receive_distribution(unb64(mail["data"]), now=now_ms())
                    mail_ids.append(mail["mail_id"])
            for part in parts:
                for message in part["messages"]:
                    cid = message["conversation_id"]
                    opened = self.conversations[cid].receive_envelope(
                        unb64(message["envelope"]), now=now_ms()
                    )
                    assert isinstance(opened.content, Text)
                    received.append((cid, message["seq"], opened.content.text))
            self.socket.request("ack", cursors=through, mail=mail_ids)
            if not parts[-1]["more"]:
                return received
