"""Sealing each network's audit log into the archive, segment by segment.

A segment is the entries after the last sealed one up to the head as read,
written once under Object Lock (``auditchain.segment_key``); the head then
records how far the log is sealed, conditional on what was read, so two
sealers never both move it. An object written by a sealer that then lost
that race holds the same entries under the same key: harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sotto.auditchain import ChainEntry, segment_key, segment_lines

from ..dal._single_table import Conflict
from ..dal.audit import AuditStore

__all__ = ["seal_all"]

# One object per sealing at most this many entries (a few MB of JSON lines).
MAX_SEGMENT_ENTRIES = 5000
PutObject = Callable[[str, bytes], None]


def seal_all(store: AuditStore, put_object: PutObject) -> dict[str, Any]:
    """Seal what is new in every network's log; returns what was sealed."""
    sealed: list[dict[str, Any]] = []
    for network_id in store.networks():
        head = store.head(network_id)
        if head is None or head.seq <= head.sealed_seq:
            continue
        through = min(head.seq, head.sealed_seq + MAX_SEGMENT_ENTRIES)
        entries = store.entries(network_id, after_seq=head.sealed_seq, through=through)
        if not entries:
            continue
        chain = [ChainEntry(e.seq, e.body, e.hash) for e in entries]
        name = segment_key(network_id, chain[0].seq, chain[-1].seq)
        put_object(name, segment_lines(chain))
        try:
            store.mark_sealed(head, chain[-1].seq, chain[-1].hash)
        except Conflict:
            continue  # another sealer moved it first; its segment covers these
        sealed.append({"network_id": network_id, "key": name, "through": chain[-1].seq})
    return {"sealed": sealed}
