"""The messaging SDK: one device's conversations over a WebSocket session.

``Messenger`` is the adapter between the server routes (docs/api.md,
"Messaging") and the sans-I/O engine ``sotto.protocol.conversation``; it
does no cryptography itself. Its rules:

* **State before acknowledgement.** Every engine state change (a chain
  advanced, a distribution installed, a one-time prekey consumed, an
  identity first seen) is saved to the sealed keystore before anything is
  acknowledged to the server and before a prepared envelope leaves.
* **Prepared sends are replayed, never re-encrypted.** A prepared envelope
  (and its key distributions) is saved in the outbox first; on a lost
  connection the same bytes are sent again, and the server de-duplicates on
  the message id. What a refusal means (keep it for the next command, repair
  the roster or the restored keystore and prepare again, name it in a notice)
  is decided once, ``outbox.refused``, for a live send and a flush alike.
* **The server's copy and the cursor are the truth.** Pushes are
  de-duplicated by seq and mail id; the cursor acknowledged is the highest
  seq with nothing missing below it.
* **A conversation's messages are shown in seq order.** A pushed message
  above a gap is left for the sync the gap starts, which brings it after the
  missing ones; a batch is processed in seq order per conversation, mail
  merged in by time (``receive_order``, §14.5); a message whose chain key has
  not come holds the conversation's later messages back (``PendingItem``)
  until the key comes or a complete sync ends without it; a new Messenger,
  and one whose last sync failed, syncs before it hands out any push.
* **Trust is local.** Certificates are verified against identities in this
  device's ``IdentityTracker``; a changed identity key raises ``TrustError``
  (sending) or is reported as a notice (receiving) until the person runs
  ``sotto verify USER --accept-change``.

Several processes may use a profile at once (a ``listen`` beside ``send``,
``verify``, ``contacts``...): every operation runs under the profile's lock
(``Vault.lock``, held for the operation only, never while waiting for
pushes), first reads again what another process wrote, and at its end
writes only the state files it changed. The passphrase's key derivation runs
once per process (``Profile.unlock``).

How it is built: ``Messenger`` is one class composed of mixins, one module a
concern, each a part a reader can hold in their head. A mixin subclasses the
parts whose methods it calls, so every call goes through ``self`` to a method
it can see (mypy checks each part alone), and a subclass's override (the
soak's ``SoakMessenger``, a test's) takes effect wherever the method is
called. Mixins rather than collaborator objects because the parts share one
state and call across concerns (a refused send reads the roster again, a
received batch sends receipts, adding a member sends the room's name), and an
override must reach every caller.

The parts, in the order they stand on each other:

* ``core.Core``: construction, lifetime, the operation lock, saving and
  reading again, expiry (``purge``), the session, reconnecting requests, the
  network's policy and retention;
* ``people.People``: users by contact, handle or id; their identity keys;
* ``safety.Safety``: safety numbers, ``verify``; this device's prekeys;
* ``conversations.Conversations``: records and engines, the verified
  membership (``refresh``), direct and self conversations, the list, history;
* ``sending.Sending``: ``send``, preparing, prekeys, delivering, refusals and
  repair, the outbox;
* ``contacts.Contacts``: contacts, synced to this user's other devices;
* ``rooms.Rooms``: creating rooms, membership changes, members, the room's
  profile and label;
* ``attachments.Attachments``: sending files and locations, downloading;
* ``opening.Opening``: opening mail and envelopes, held keys, parked
  messages, redistribution;
* ``receiving.Receiving``: ``sync``, ``poll``, ``listen``, acknowledgements,
  receipts, ``mark_read``.
"""

from __future__ import annotations

from .attachments import Attachments
from .core import SessionLike
from .receiving import Receiving
from .rooms import Rooms
from .safety import SafetyReport

__all__ = ["Messenger", "SafetyReport", "SessionLike"]


class Messenger(Receiving, Rooms, Attachments):
    """``with Messenger.open(profile, info, keys, passphrase) as m: m.send_text(...)``."""
