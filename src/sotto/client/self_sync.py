"""Contacts and room labels shared among one user's devices, end-to-end encrypted.

A person with a laptop and a phone adds a contact or labels a room once.
Every change is kept as a *register* per key (a contact name, a labelled
conversation id): the value and the time it was set. The device that makes
a change sends it as a ``DeviceSync`` control (``protocol.device_sync``) into
the user's self conversation (``membership.SELF``), whose only member is the
user, so its only recipients are the user's other devices and the server
sees ciphertext of a padded size. A device that receives one keeps, per key,
the newest ``(timestamp, value)`` (``SyncBook.merge``): devices converge
whatever order messages come in, and a full snapshot may be sent again at
any time without undoing a newer change.

Who gets what:

* nothing is sent, and no self conversation made, while the user has no
  other device (the verified roster, or before there is one the server's
  device list, names none): a device linked later gets a snapshot;
* a change made here goes out at once (``publish``); if the network is down
  it stays in ``unsent`` and goes with the next sync (``settle``);
* a device sends a *full snapshot* to every device of its user it has not
  sent one to yet, and when it hears from such a device;
* a device's first sync, when its user has another device, says hello in the
  self conversation (creating it if need be) with its own snapshot, maybe
  empty: its user's other devices hear from it and answer with theirs, so a
  device linked later gets the contacts and labels from the next of its
  user's devices to sync.

Labels stay unique on a device: when two rooms carry the same label (two
devices labelled at once), the newer register keeps it and the other room
shows no label until that changes (``SyncBook.labels_view``).

The pure rules are ``SyncBook``; ``change``, ``publish``, ``settle`` and
``received`` are the thin adapter over a Messenger that can send (the
``messenger.sending.Sending`` part, which every part that calls them stands
on; this package's own module: it uses the Messenger's record and
dirty-state helpers directly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sotto.protocol.content import Control
from sotto.protocol.device_sync import MAX_ENTRIES, DeviceSync, SyncEntry
from sotto.protocol.errors import ProtocolError
from sotto.protocol.membership import self_conversation_id

from .errors import ClientError

if TYPE_CHECKING:
    from sotto.protocol.conversation import Received

    from .events import Event
    from .messenger.sending import Sending

__all__ = ["Register", "SyncBook", "change", "publish", "received", "settle"]

CONTACT, LABEL = SyncEntry.CONTACT, SyncEntry.LABEL
Slot = tuple[str, str]  # (CONTACT | LABEL, key)


@dataclass(frozen=True)
class Register:
    """One key's newest known state: ``value`` "" means removed (or cleared)."""

    timestamp: int
    value: str

    def beats(self, other: Register | None) -> bool:
        """The merge rule: newer timestamp wins; at the same time, the larger value."""
        return other is None or (self.timestamp, self.value) > (other.timestamp, other.value)


@dataclass
class SyncBook:
    """This device's registers and what it owes its user's other devices (sealed, local)."""

    registers: dict[Slot, Register] = field(default_factory=dict)
    unsent: set[Slot] = field(default_factory=set)  # changed here, not sent yet
    shared_with: set[str] = field(default_factory=set)  # own devices sent a full snapshot
    owed: set[str] = field(default_factory=set)  # own devices heard from, owed a snapshot
    announced: bool = False  # this device said hello in the self conversation (or had none)

    # -- the pure rules ------------------------------------------------------------------

    def record(self, kind: str, key: str, value: str, *, now: int) -> SyncEntry:
        """A change made on this device: it beats every value this device has seen."""
        old = self.registers.get((kind, key))
        at = now if old is None else max(now, old.timestamp + 1)
        entry = SyncEntry(kind, key, value, at)  # checks the names
        self.registers[entry.slot] = Register(at, value)
        self.unsent.add(entry.slot)
        return entry

    def merge(self, entries: tuple[SyncEntry, ...], *, sent_at: int) -> bool:
        """Another device's entries; True if any register changed.

        A change cannot be newer than the envelope that carries it: a
        timestamp beyond ``sent_at`` (the signed envelope time) is taken as
        ``sent_at``, so a device with a clock far ahead cannot win forever.
        """
        changed = False
        for entry in entries:
            register = Register(min(entry.timestamp, sent_at), entry.value)
            if register.beats(self.registers.get(entry.slot)):
                self.registers[entry.slot] = register
                self.unsent.discard(entry.slot)  # what we had is older: nothing of ours to send
                changed = True
        return changed

    def adopt(self, contacts: dict[str, str], labels: dict[str, str]) -> None:
        """Contacts and labels made before this book existed: known, at time 0."""
        for kind, values in ((CONTACT, contacts), (LABEL, labels)):
            for key, value in values.items():
                if (kind, key) in self.registers:
                    continue
                try:
                    SyncEntry(kind, key, value, 0)
                except ProtocolError:
                    continue  # a name the wire cannot carry stays on this device
                self.registers[(kind, key)] = Register(0, value)

    def entries(self, slots: set[Slot] | None = None) -> list[SyncEntry]:
        """The registers as entries (all of them: a snapshot), sorted as the wire wants."""
        wanted = self.registers.keys() if slots is None else slots & self.registers.keys()
        return [
            SyncEntry(kind, key, self.registers[(kind, key)].value,
                      self.registers[(kind, key)].timestamp)
            for kind, key in sorted(wanted)
        ]  # fmt: skip

    def contacts_view(self) -> dict[str, str]:
        return {
            k: r.value for (kind, k), r in self.registers.items() if kind == CONTACT and r.value
        }

    def labels_view(self) -> dict[str, str | None]:
        """Every labelled conversation's label here: a label the newest register holds."""
        holder: dict[str, tuple[int, str]] = {}
        for (kind, cid), register in self.registers.items():
            if kind == LABEL and register.value:
                best = holder.get(register.value)
                if best is None or (register.timestamp, cid) > best:
                    holder[register.value] = (register.timestamp, cid)
        won = {cid: label for label, (_, cid) in holder.items()}
        return {cid: won.get(cid) for (kind, cid) in self.registers if kind == LABEL}

    # -- storage -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "registers": [
                [kind, key, r.timestamp, r.value]
                for (kind, key), r in sorted(self.registers.items())
            ],
            "unsent": sorted([kind, key] for kind, key in self.unsent),
            "shared_with": sorted(self.shared_with),
            "owed": sorted(self.owed),
            "announced": self.announced,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SyncBook:
        if data is None:
            return cls()  # a state written before device sync
        return cls(
            registers={
                (str(kind), str(key)): Register(int(at), str(value))
                for kind, key, at, value in data["registers"]
            },
            unsent={(str(kind), str(key)) for kind, key in data["unsent"]},
            shared_with={str(d) for d in data["shared_with"]},
            owed={str(d) for d in data["owed"]},
            announced=bool(data["announced"]),
        )


# -- the adapter over a Messenger --------------------------------------------------------


def _adopt(m: Sending) -> None:
    labels = {cid: r.label for cid, r in m.state.conversations.items() if r.label}
    m.state.sync.adopt(m.state.contacts, labels)


def _apply(m: Sending) -> None:
    """Make the device's contacts and labels what the registers say (nothing else moves)."""
    book = m.state.sync
    for (kind, key), register in book.registers.items():
        if kind == CONTACT and register.value:
            m.state.contacts[key] = register.value
        elif kind == CONTACT:
            m.state.contacts.pop(key, None)
    for cid, label in book.labels_view().items():
        record = m.state.conversations.get(cid)
        if record is None and label is None:
            continue
        if record is None or record.label != label:
            m._record(cid).label = label  # a room not seen here yet is known by its label
    m._dirty = True


def _own_devices(m: Sending, cid: str) -> set[str]:
    """The user's other devices the self conversation's verified roster has."""
    members = m.engine(cid).members
    return {d for u, d in members if u == m.info.user_id and d != m.info.device_id}


def _notice(cid: str, code: str, text: str) -> list[Event]:
    from .events import NoticeEvent  # here: events imports the store, which imports this

    return [NoticeEvent(cid, code, text)]


def _others_listed(m: Sending) -> bool:
    """Whether the server lists another active device of this user (a hint, not trust:
    a server that hides one only delays the sharing it could block anyway)."""
    parts = m._call_parts("list_devices", user_id=m.info.user_id)
    return any(
        d.get("device_id") != m.info.device_id and d.get("status") == "active"
        for part in parts
        for d in part.get("devices") or []
    )


def publish(m: Sending) -> None:
    """Send what this device owes: a snapshot to own devices that lack one, else the changes.

    Nothing is sent (nor a self conversation made) while the user has no other
    device: a device linked later says hello and gets a snapshot then. Raises
    ``ClientError`` (the changes stay unsent: the next ``settle`` sends them).
    """
    book = m.state.sync
    _adopt(m)
    cid = self_conversation_id(m.info.user_id)
    if cid not in m.state.conversations and not _others_listed(m):
        book.unsent.clear()  # nobody to tell: every later device gets a full snapshot
        book.announced = True
        m._dirty = True
        return
    m.self_conversation()
    own = _own_devices(m, cid)
    book.owed &= own  # a device since revoked is owed nothing
    full = bool((own - book.shared_with) | book.owed)
    entries = book.entries() if full else book.entries(set(book.unsent))
    if own:
        for start in range(0, len(entries), MAX_ENTRIES):
            chunk = entries[start : start + MAX_ENTRIES]
            m.send(cid, DeviceSync.of(chunk).to_control())
        if not entries and not book.announced:
            m.send(cid, DeviceSync(()).to_control())  # hello: this device is here
    book.unsent.clear()
    book.shared_with |= own
    book.owed.clear()
    book.announced = True
    m._dirty = True


def settle(m: Sending) -> list[Event]:
    """After a sync or pushes: send what is owed (changes made offline, a snapshot to a
    device heard from, this device's hello); a failure is reported, retried next time."""
    book = m.state.sync
    try:
        if book.unsent or book.owed or not book.announced:
            publish(m)
    except ClientError as exc:
        text = f"contacts and room labels not shared with your other devices yet: {exc}"
        return _notice(self_conversation_id(m.info.user_id), "device_sync", text)
    return []


def received(m: Sending, cid: str, content: Control, message: Received) -> list[Event]:
    """A ``DeviceSync`` from another device: merged if it is this user's, in its self
    conversation; never shown as a message, never acknowledged with a receipt."""
    user_id, device_id = message.sender
    if cid != self_conversation_id(m.info.user_id) or user_id != m.info.user_id:
        text = f"a device sync message from {m.name_of(user_id)} outside your devices' own"
        return _notice(cid, "device_sync", text + " conversation (ignored)")
    try:
        sync = DeviceSync.from_control(content)
    except ProtocolError as exc:
        return _notice(cid, exc.code, f"a bad device sync message: {exc}")
    book = m.state.sync
    _adopt(m)
    if book.merge(sync.entries, sent_at=message.header.timestamp):
        _apply(m)
    if device_id not in book.shared_with:
        book.owed.add(device_id)  # it has not had our snapshot: it gets one (settle)
    m._dirty = True
    return []


def change(m: Sending, kind: str, key: str, value: str) -> None:
    """Record a change made on this device (checked: a ProtocolError if unnamable)."""
    _adopt(m)
    m.state.sync.record(kind, key, value, now=m._clock())
    _apply(m)
    m._dirty = True
