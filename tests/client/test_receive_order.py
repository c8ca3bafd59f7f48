"""The order a device processes a batch in (``receive_order``), in memory.

A conversation's messages come out in seq order whatever their server times
(the server stamps the time before it assigns the seq, so concurrent sends
can carry them crossed); a distribution still comes before the messages
that need it, and mail stays merged in time (docs/protocol.md §14.5).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sotto.client.delivery import receive_order


def message(cid: str, seq: int, server_time: object) -> dict[str, Any]:
    return {"conversation_id": cid, "seq": seq, "server_time": server_time, "envelope": ""}


def mail(name: str, server_time: object) -> dict[str, Any]:
    return {"mail_id": name, "conversation_id": "c", "server_time": server_time, "kind": "x"}


def names(order: list[tuple[bool, dict[str, Any]]]) -> list[str]:
    return [f"#{item['seq']}" if is_message else str(item["mail_id"]) for is_message, item in order]


def test_crossed_server_times_come_out_in_seq_order() -> None:
    batch = [message("c", 8, 1003), message("c", 7, 1005), message("c", 6, 1004)]
    assert names(receive_order([], batch)) == ["#6", "#7", "#8"]


def test_a_distribution_comes_before_the_message_that_needs_it() -> None:
    # #11 was stamped before its chain's key was stored (it overtook #10 for its seq);
    # the key, stored before #11's send arrived, still goes first.
    batch = [message("c", 10, 2000), message("c", 11, 1990)]
    assert names(receive_order([mail("key", 1995)], batch)) == ["key", "#10", "#11"]


def test_mail_stays_merged_in_time_between_messages() -> None:
    batch = [message("c", 1, 100), message("c", 2, 300)]
    order = receive_order([mail("late", 400), mail("middle", 200), mail("early", 50)], batch)
    assert names(order) == ["early", "#1", "middle", "#2", "late"]


def test_hostile_times_and_seqs_do_not_break_the_order() -> None:
    batch = [message("c", 2, "soon"), message("c", 1, None), message("c", True, 5)]
    order = receive_order([mail("m", {"x": 1})], batch)
    assert sorted(names(order)) == sorted(["#2", "#1", "#True", "m"])
    assert names(order).index("#1") < names(order).index("#2")


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10_000)),
        max_size=40,
    ),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_every_conversation_is_in_seq_order_and_nothing_is_lost(
    sends: list[tuple[str, int]], mail_times: list[int]
) -> None:
    seqs: dict[str, int] = {}
    batch = []
    for cid, server_time in sends:
        seqs[cid] = seqs.get(cid, 0) + 1
        batch.append(message(cid, seqs[cid], server_time))
    boxed = [mail(f"m{i}", t) for i, t in enumerate(mail_times)]
    order = receive_order(boxed, batch[::-1])
    assert len(order) == len(batch) + len(boxed)
    for cid in seqs:
        shown = [
            item["seq"]
            for is_message, item in order
            if is_message and item["conversation_id"] == cid
        ]
        assert shown == list(range(1, seqs[cid] + 1))
    # A mail item goes before every message stamped after it (a key before its messages).
    for index, (is_message, item) in enumerate(order):
        if not is_message:
            earlier = [m for kind, m in order[:index] if kind]
            assert all(m["server_time"] <= item["server_time"] for m in earlier)
