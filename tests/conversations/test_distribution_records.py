"""A large room's distribution is several frames, stored concurrently: none may lose another's.

The chain record (``CHAIN#device``) lists every device a sender's chain
reached; the send check compares it with the roster. Two frames of a new
chain both find the previous chain recorded; the one that writes second
must add to the first's recipients, not replace them.
"""

from __future__ import annotations

from typing import Any, cast

from sotto_server.dal.conversations import ConversationsStore
from tests.support.stack import Stack

CID = "cnv-distribution-race"
OLD, NEW = b"\x01" * 16, b"\x02" * 16


class Interleaving:
    """A DynamoDB client that runs ``meanwhile`` just after the first failed conditional update,
    as a concurrent frame's write would land between this frame's two steps."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.meanwhile: list[Any] = []

    def update_item(self, **kwargs: Any) -> Any:
        try:
            return self.inner.update_item(**kwargs)
        except self.inner.exceptions.ConditionalCheckFailedException:
            while self.meanwhile:
                self.meanwhile.pop()()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_two_frames_of_a_new_chain_keep_both_recipient_sets(default_stack: Stack) -> None:
    table = default_stack.table("MessagesTable")
    plain = ConversationsStore(default_stack.client("dynamodb"), table)
    racing = Interleaving(default_stack.client("dynamodb"))
    store = ConversationsStore(cast(Any, racing), table)
    plain.record_distribution(CID, "dev-sender", OLD, {"usr-a/dev-old"})
    racing.meanwhile.append(
        lambda: plain.record_distribution(CID, "dev-sender", NEW, {"usr-b/dev-1", "usr-b/dev-2"})
    )
    store.record_distribution(CID, "dev-sender", NEW, {"usr-c/dev-1"})
    assert plain.chain(CID, "dev-sender") == (NEW, {"usr-b/dev-1", "usr-b/dev-2", "usr-c/dev-1"})


def test_a_new_chain_replaces_the_old_record(default_stack: Stack) -> None:
    store = ConversationsStore(
        default_stack.client("dynamodb"), default_stack.table("MessagesTable")
    )
    store.record_distribution(CID, "dev-other", OLD, {"usr-a/dev-1"})
    store.record_distribution(CID, "dev-other", OLD, {"usr-a/dev-2"})
    assert store.chain(CID, "dev-other") == (OLD, {"usr-a/dev-1", "usr-a/dev-2"})
    store.record_distribution(CID, "dev-other", NEW, {"usr-b/dev-1"})
    assert store.chain(CID, "dev-other") == (NEW, {"usr-b/dev-1"})
