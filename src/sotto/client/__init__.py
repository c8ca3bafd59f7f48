"""The Sotto client SDK: profiles and keystore, server resolution, HTTP and WebSocket
transport, and the identity flows (enroll, link, approve, prekeys, device lists).

Modules (each an adapter around ``sotto.protocol``, which does all crypto):

* ``errors``      the client's error tree
* ``profile``     SOTTO_HOME, profile.json and the sealed keystore, passphrases
* ``server``      ``--server`` resolution (HTTP API URL, local data dir, endpoints.json)
* ``http``/``api`` JSON over HTTP, SigV4 for admin routes, one method per route
* ``session``     the authenticated WebSocket session
* ``enrollment``  enroll with an invite; link a new device
* ``devices``     approve links, verify device lists, keep prekeys stocked
* ``store``/``events``/``messenger``  conversations, send, sync, receipts, expiry (Messenger)
* ``commands``    the CLI commands built on the above (``messaging_commands``: send, listen...)
"""

from __future__ import annotations

from .api import AdminApi, PublicApi
from .devices import approve_link, keys_publish, keys_status, list_devices
from .enrollment import enroll, link_device
from .errors import (
    ApiError,
    ClientError,
    ConnectRefused,
    FlowError,
    FrameError,
    InvalidRequest,
    PassphraseError,
    ProfileError,
    ServerResolutionError,
    SessionError,
    TransportError,
    UsageError,
)
from .messenger import Messenger
from .outbox import SentMessage
from .profile import DeviceKeys, Profile, ProfileInfo, read_passphrase, sotto_home
from .server import ServerConfig, resolve_server
from .session import Session

__all__ = [
    "AdminApi",
    "ApiError",
    "ClientError",
    "ConnectRefused",
    "DeviceKeys",
    "FlowError",
    "FrameError",
    "InvalidRequest",
    "Messenger",
    "PassphraseError",
    "Profile",
    "ProfileError",
    "ProfileInfo",
    "PublicApi",
    "SentMessage",
    "ServerConfig",
    "ServerResolutionError",
    "Session",
    "SessionError",
    "TransportError",
    "UsageError",
    "approve_link",
    "enroll",
    "keys_publish",
    "keys_status",
    "link_device",
    "list_devices",
    "read_passphrase",
    "resolve_server",
    "sotto_home",
]
