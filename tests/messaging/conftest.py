"""Fixtures for messaging over the real local stack: people with enrolled and linked
devices, each device a ``Messenger`` (the SDK) with its own profile and keystore.

Keystores use the default Argon2id parameters: a command derives the key
once (``Profile.unlock``), so the suite needs no weakened KDF.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sotto.client.api import fetch_info
from sotto.client.devices import approve_link
from sotto.client.enrollment import enroll, link_device
from sotto.client.events import Event, MessageEvent
from sotto.client.messenger import Messenger
from sotto.client.profile import Profile
from sotto.client.server import ServerConfig, resolve_server
from tests.support.stack import Stack, invite

PASSPHRASE = "correct horse battery"


class QuietUi:
    """Collects what a flow shows; always says yes."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def show(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.put(line)

    def confirm(self, question: str) -> bool:
        return True


@dataclass
class Person:
    handle: str
    user_id: str
    devices: list[Messenger] = field(default_factory=list)


def open_messenger(home: Path, name: str, **kwargs: object) -> Messenger:
    profile = Profile.open(name, home)
    info = profile.read_info()
    keys = profile.load_keys(PASSPHRASE)
    return Messenger.open(profile, info, keys, PASSPHRASE, **kwargs)


def enroll_person(stack: Stack, server: ServerConfig, home: Path, handle: str) -> str:
    code = invite(stack, handle=handle)["code"]
    info = enroll(server, code, handle, PASSPHRASE, ui=QuietUi(), home=home)
    return info.user_id


def link_second_device(server: ServerConfig, home: Path, first: str, second: str) -> None:
    """The SDK's link flow, both sides at once: the first device approves the second."""
    profile = Profile.open(first, home)
    info, keys = profile.read_info(), profile.load_keys(PASSPHRASE)
    ui = QuietUi()
    errors: list[BaseException] = []

    def approve() -> None:
        try:
            approve_link(info, keys, ui=ui, assume_yes=True, timeout_s=60, poll_s=0.2)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    approver = threading.Thread(target=approve, daemon=True)
    approver.start()
    code = ""
    while not code:
        line = ui.lines.get(timeout=30)
        if line.startswith("Link code: "):
            code = line.removeprefix("Link code: ").strip()
    link_device(server, code, second, PASSPHRASE, ui=QuietUi(), home=home, poll_s=0.2)
    approver.join(timeout=60)
    assert not errors, errors


@dataclass
class Team:
    server: ServerConfig
    home: Path
    alice: Person
    bob: Person
    carol: Person


@pytest.fixture(scope="package")
def server(stack: Stack) -> ServerConfig:
    return resolve_server(str(stack.log_path.parent), fetch_info)


@pytest.fixture(scope="package")
def team(
    stack: Stack, server: ServerConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Team]:
    """alice and bob with two devices each (the second linked), carol with one."""
    home = tmp_path_factory.mktemp("sotto-home")
    suffix = secrets.token_hex(4)
    people = {}
    for handle in ("alice", "bob", "carol"):
        people[handle] = Person(handle, enroll_person(stack, server, home, f"{handle}{suffix}"))
    for handle in ("alice", "bob"):
        link_second_device(server, home, f"{handle}{suffix}", f"{handle}{suffix}-2")
    for handle, person in people.items():
        names = [f"{handle}{suffix}"] + ([f"{handle}{suffix}-2"] if handle != "carol" else [])
        person.devices = [open_messenger(home, name) for name in names]
    for person in people.values():
        for device in person.devices:
            for other in people.values():
                device.add_contact(other.handle, other.user_id)
    yield Team(server, home, people["alice"], people["bob"], people["carol"])
    for person in people.values():
        for device in person.devices:
            device.close()


def texts(events: list[Event], conversation_id: str | None = None) -> list[str]:
    return [
        e.text
        for e in events
        if isinstance(e, MessageEvent)
        and (conversation_id is None or e.conversation_id == conversation_id)
    ]


def wait_for(
    messenger: Messenger, count: int, conversation_id: str, *, timeout: float = 15.0
) -> list[Event]:
    """Poll live pushes until ``count`` messages of the conversation arrived (or time out)."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(texts(events, conversation_id)) < count and time.monotonic() < deadline:
        events += messenger.poll(0.3)
    return events
