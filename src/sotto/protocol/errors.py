"""Every error the protocol library raises.

Class tree (``code`` in brackets; codes are stable and listed in docs/protocol.md)::

    ProtocolError                    [protocol_error] root: catch this to catch everything
    ├── TokenError                   [bad_token, ...] connect token malformed/forged/stale
    ├── MalformedMessage             [malformed] bytes do not parse as the claimed type
    │   ├── UnsupportedVersion       [unsupported_version] version byte is not 1
    │   └── SuiteDowngrade           [suite_downgrade] suite id is not the one required
    ├── CertificateError
    │   ├── BadCertificate           [bad_certificate] a certificate signature fails
    │   ├── CertificateExpired       [certificate_expired] outside its validity window
    │   └── DeviceRevoked            [device_revoked] the device's identity revoked it
    ├── SenderMismatch               [sender_mismatch] claimed sender != certificate
    ├── UnknownSender                [unknown_sender] sender device is not a member
    ├── BadSignature                 [bad_signature] the device signature does not verify
    ├── CiphertextTampered           [ciphertext_tampered] ciphertext != signed digest
    ├── KeyCommitmentMismatch        [key_commitment_mismatch] chain key != the signed commitment
    ├── DecryptionFailed             [decryption_failed] AEAD/HPKE open failed (opaque)
    ├── WrongRecipient               [wrong_recipient] addressed to another device
    ├── WrongConversation            [wrong_conversation] for another conversation
    ├── ReplayedMessage              [replayed_message] message id already accepted
    ├── MessageExpired               [message_expired] past its expiry
    ├── RatchetError
    │   ├── UnknownChain             [unknown_chain] no chain key for this chain id
    │   ├── TooManySkipped           [too_many_skipped] jump beyond the skipped-key window
    │   ├── MessageKeyUnavailable    [message_key_unavailable] key used or evicted
    │   ├── RotationRequired         [rotation_required] chain too old/used/stale members
    │   └── PrekeysRequired          [prekeys_required] a new chain needs these devices' prekeys
    ├── AttachmentError
    │   ├── AttachmentTampered       [attachment_tampered] a chunk fails to decrypt
    │   ├── AttachmentTruncated      [attachment_truncated] stream ends early
    │   └── AttachmentOutOfOrder     [attachment_out_of_order] chunk index unexpected
    ├── MembershipError              [membership_error] the membership log does not verify
    │   ├── ForgedOperation          [membership_forged] bad signature/certificate/identity binding
    │   ├── NotPermitted             [membership_not_permitted] the signer may not make this change
    │   │   ├── NotModerator         [not_moderator] only a moderator may do this
    │   │   └── SelfPromotion        [self_promotion] a member changing its own role
    │   ├── OperationReplayed        [operation_replayed] at or before the verified head
    │   ├── OperationOutOfOrder      [operation_out_of_order] a gap, a reordering, time going back
    │   ├── LogForked                [log_forked] does not follow the verified head
    │   ├── LogTruncated             [log_truncated] no creation, or shorter than verified
    │   ├── IdentityUnavailable      [identity_unavailable] no key for a signer's identity
    │   └── NotAMember               [not_a_member] a device or user the log does not justify
    ├── IdentityChanged              [identity_changed] a known user's identity key changed
    ├── PrekeyError                  [prekey_unavailable] prekey unknown or already used
    ├── UnknownSession               [unknown_session] a pairwise session this device does not hold
    ├── LimitExceeded                [limit_exceeded] a size or count limit (local misuse)
    └── KeystoreError
        ├── WrongPassphrase          [wrong_passphrase]
        └── CorruptKeystore          [corrupt_keystore]

``fault`` says whose fault it is, like h11: ``"remote"`` for bytes that came from
the network, ``"local"`` for misuse by the caller. Decryption failures are
deliberately one opaque class; the *verification* layer around them names the
rule that broke.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AttachmentError",
    "AttachmentOutOfOrder",
    "AttachmentTampered",
    "AttachmentTruncated",
    "BadCertificate",
    "BadSignature",
    "CertificateError",
    "CertificateExpired",
    "CiphertextTampered",
    "CorruptKeystore",
    "DecryptionFailed",
    "DeviceRevoked",
    "ForgedOperation",
    "IdentityChanged",
    "IdentityUnavailable",
    "KeyCommitmentMismatch",
    "KeystoreError",
    "LimitExceeded",
    "LogForked",
    "LogTruncated",
    "MalformedMessage",
    "MembershipError",
    "MessageExpired",
    "MessageKeyUnavailable",
    "NotAMember",
    "NotModerator",
    "NotPermitted",
    "OperationOutOfOrder",
    "OperationReplayed",
    "PrekeyError",
    "PrekeysRequired",
    "ProtocolError",
    "RatchetError",
    "ReplayedMessage",
    "RotationRequired",
    "SelfPromotion",
    "SenderMismatch",
    "SuiteDowngrade",
    "TokenError",
    "TooManySkipped",
    "UnknownChain",
    "UnknownSender",
    "UnknownSession",
    "UnsupportedVersion",
    "WrongConversation",
    "WrongPassphrase",
    "WrongRecipient",
]


class ProtocolError(Exception):
    """Root of the protocol library's errors."""

    code: str = "protocol_error"
    fault: ClassVar[str] = "remote"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


class TokenError(ProtocolError):
    """A connect token failed to parse or verify; ``code`` says which rule broke."""

    code = "bad_token"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail)
        self.code = code


class MalformedMessage(ProtocolError):
    code = "malformed"


class UnsupportedVersion(MalformedMessage):
    code = "unsupported_version"


class SuiteDowngrade(MalformedMessage):
    """The suite id is not the one this receiver requires; never negotiated down."""

    code = "suite_downgrade"


class CertificateError(ProtocolError):
    code = "certificate_error"


class BadCertificate(CertificateError):
    code = "bad_certificate"


class CertificateExpired(CertificateError):
    code = "certificate_expired"


class DeviceRevoked(CertificateError):
    code = "device_revoked"


class SenderMismatch(ProtocolError):
    code = "sender_mismatch"


class UnknownSender(ProtocolError):
    """The claimed sender device is not a current member of the conversation."""

    code = "unknown_sender"


class BadSignature(ProtocolError):
    code = "bad_signature"


class CiphertextTampered(ProtocolError):
    code = "ciphertext_tampered"


class KeyCommitmentMismatch(ProtocolError):
    """The signed header commits to another message key than this chain derives.

    The sender gave this device a different chain key under that chain id than
    the one it sealed with (or the chain state is corrupt); checked before the
    AEAD runs, so one envelope never opens to different content for different members.
    """

    code = "key_commitment_mismatch"


class DecryptionFailed(ProtocolError):
    """Opaque on purpose: says nothing about which AEAD/HPKE check failed."""

    code = "decryption_failed"


class WrongRecipient(ProtocolError):
    code = "wrong_recipient"


class WrongConversation(ProtocolError):
    code = "wrong_conversation"


class ReplayedMessage(ProtocolError):
    code = "replayed_message"


class MessageExpired(ProtocolError):
    code = "message_expired"


class RatchetError(ProtocolError):
    code = "ratchet_error"


class UnknownChain(RatchetError):
    code = "unknown_chain"


class TooManySkipped(RatchetError):
    code = "too_many_skipped"


class MessageKeyUnavailable(RatchetError):
    code = "message_key_unavailable"


class RotationRequired(RatchetError):
    """The sending chain must be replaced before another message is sent."""

    code = "rotation_required"
    fault: ClassVar[str] = "local"


class PrekeysRequired(RatchetError):
    """A new sender chain must be distributed; fetch a prekey for each listed device."""

    code = "prekeys_required"
    fault: ClassVar[str] = "local"

    def __init__(self, devices: list[tuple[str, str]]) -> None:
        names = ", ".join(f"{user}/{device}" for user, device in devices)
        super().__init__(f"prekeys needed for {names}")
        self.devices = devices


class AttachmentError(ProtocolError):
    code = "attachment_error"


class AttachmentTampered(AttachmentError):
    code = "attachment_tampered"


class AttachmentTruncated(AttachmentError):
    code = "attachment_truncated"


class AttachmentOutOfOrder(AttachmentError):
    code = "attachment_out_of_order"


class MembershipError(ProtocolError):
    """A membership operation or log does not verify; ``code`` names the rule."""

    code = "membership_error"


class ForgedOperation(MembershipError):
    """Signature, signer certificate or the identity the log binds the signer to fails."""

    code = "membership_forged"


class NotPermitted(MembershipError):
    code = "membership_not_permitted"


class NotModerator(NotPermitted):
    code = "not_moderator"


class SelfPromotion(NotPermitted):
    code = "self_promotion"


class OperationReplayed(MembershipError):
    code = "operation_replayed"


class OperationOutOfOrder(MembershipError):
    code = "operation_out_of_order"


class LogForked(MembershipError):
    code = "log_forked"


class LogTruncated(MembershipError):
    code = "log_truncated"


class IdentityUnavailable(MembershipError):
    """No identity key with the fingerprint a signer's certificate names was supplied."""

    code = "identity_unavailable"


class NotAMember(MembershipError):
    """A listed user or device the verified log does not justify (a ghost)."""

    code = "not_a_member"


class IdentityChanged(ProtocolError):
    """A user's identity key differs from the one on record; never accepted silently."""

    code = "identity_changed"

    def __init__(self, user_id: str, old_fingerprint: bytes, new_fingerprint: bytes) -> None:
        super().__init__(f"identity key of {user_id!r} changed; verify the new safety number")
        self.user_id = user_id
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = new_fingerprint


class PrekeyError(ProtocolError):
    code = "prekey_unavailable"


class UnknownSession(ProtocolError):
    """A distribution over a pairwise session this device does not hold (state lost, expired).

    The recipient asks the sender for a new distribution (docs/protocol.md §16):
    ``peer`` and ``session_id`` name what to ask for.
    """

    code = "unknown_session"

    def __init__(self, peer: tuple[str, str], session_id: bytes) -> None:
        super().__init__(f"no session {session_id.hex()[:16]} with {peer[0]}/{peer[1]}")
        self.peer = peer
        self.session_id = session_id


class LimitExceeded(ProtocolError):
    """A size or count limit; carries the limit and the offending value."""

    code = "limit_exceeded"
    fault: ClassVar[str] = "local"

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size}, limit {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class KeystoreError(ProtocolError):
    code = "keystore_error"
    fault: ClassVar[str] = "local"


class WrongPassphrase(KeystoreError):
    code = "wrong_passphrase"

    def __init__(self, detail: str = "wrong passphrase") -> None:
        super().__init__(detail)


class CorruptKeystore(KeystoreError):
    code = "corrupt_keystore"

    def __init__(self, detail: str = "keystore is corrupt or not a Sotto keystore") -> None:
        super().__init__(detail)
