"""The audit hash chain: encoding, verification, and what an edit or a gap looks like."""

from __future__ import annotations

from dataclasses import replace

from sotto.auditchain import (
    GENESIS,
    ChainEntry,
    encode_body,
    entry_hash,
    parse_segment,
    segment_lines,
    verify_chain,
    verify_segments,
)


def _chain(count: int) -> list[ChainEntry]:
    entries, prev = [], GENESIS
    for seq in range(1, count + 1):
        body = encode_body(seq, prev, {"event": "invite.created", "subject": {"n": str(seq)}})
        entries.append(ChainEntry(seq, body, entry_hash(body)))
        prev = entries[-1].hash
    return entries


def test_an_intact_chain_verifies() -> None:
    chain = _chain(5)
    assert verify_chain(chain, head=(5, chain[-1].hash)) == []


def test_an_edited_entry_is_named() -> None:
    chain = _chain(4)
    edited = chain[2].body.replace('"n":"3"', '"n":"x"')
    chain[2] = replace(chain[2], body=edited)
    assert verify_chain(chain) == ["edit: entry 3 does not hash to its recorded hash"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    chain = _chain(4)
    edited = chain[1].body.replace('"n":"2"', '"n":"x"')
    chain[1] = ChainEntry(2, edited, entry_hash(edited))
    assert verify_chain(chain) == ["edit: entry 3 does not link to entry 2"]


def test_a_removed_entry_is_a_gap() -> None:
    chain = _chain(5)
    del chain[2]
    problems = verify_chain(chain)
    assert problems[0] == "gap: entries 3..3 are missing"


def test_entries_removed_from_the_end_disagree_with_the_head() -> None:
    chain = _chain(5)
    assert verify_chain(chain[:3], head=(5, chain[-1].hash)) == [
        "gap: entries 4..5 are missing (the head is at 5)"
    ]


def test_sealed_segments_catch_a_rewritten_log() -> None:
    chain = _chain(6)
    segments = {
        "a": parse_segment(segment_lines(chain[:3])),
        "b": parse_segment(segment_lines(chain[3:])),
    }
    assert verify_segments(chain, segments) == []
    # An insider rewrites entry 2 and every hash after it: the chain alone holds...
    rewritten, prev = [], GENESIS
    for entry in chain:
        fields = entry.fields()
        fields.pop("seq"), fields.pop("prev")
        if entry.seq == 2:
            fields["subject"] = {"n": "forged"}
        body = encode_body(entry.seq, prev, fields)
        rewritten.append(ChainEntry(entry.seq, body, entry_hash(body)))
        prev = rewritten[-1].hash
    assert verify_chain(rewritten) == []
    # ...the sealed copies do not.
    problems = verify_segments(rewritten, segments)
    assert "edit: entry 2 differs from its sealed copy (a)" in problems
    assert verify_segments(chain[:4] + chain[5:], segments) == [
        "gap: sealed entry 5 was removed from the log (b)"
    ]
