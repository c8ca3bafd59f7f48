"""Sotto's protocol and crypto core: pure, sans-I/O (spec: docs/protocol.md).

This package imports only the standard library and ``cryptography``
(tests/protocol/test_purity.py proves it); the client, the Lambda handlers
and the local gateway are adapters around it. Modules:

* ``wire``          canonical encoding, version/suite prefix, identifiers
* ``errors``        the error tree, one machine code per rule
* ``keys``          identity, device signing and HPKE KEM key pairs
* ``certificates``  device/prekey certificates, revocations
* ``device``        a device's own secrets and prekey lifecycle
* ``pairwise``      HPKE sealing with an ``info`` that binds both parties
* ``ratchet``       sender chains (symmetric ratchet, skipped keys, rotation)
* ``distribution``  key-distribution messages (chain key to one device)
* ``sessions``      pairwise sessions: chain keys over a symmetric ratchet per device pair
* ``envelope``      signed, padded conversation messages
* ``membership``    the signed, hash-chained membership log and its verifier
* ``conversation``  one device's client state machine for one conversation
* ``content``       content types and padding
* ``attachments``   streaming chunked AEAD
* ``replay``        message-id replay guard
* ``safety``        safety numbers, identity-change detection
* ``keystore``      passphrase-sealed keystore format (file I/O: ``sotto.keystore``)
* ``connect_token`` WebSocket ``$connect`` tokens
"""

__all__: list[str] = []
