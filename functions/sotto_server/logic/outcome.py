"""What a route returns: frames for the caller and notices for other devices.

A multi-part answer's frames come from ``sotto.frames.paginate_lists``: the
pagination contract the SDK joins with the same module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome"]


@dataclass
class Outcome:
    """Frames for the caller, (device_id, frame) notices for other devices, and
    housekeeping nobody waits for (run after the answer went out; it must be
    safe to lose, as a Lambda may stop after answering)."""

    # Mappings: the frames are typed dicts of ``sotto.frames.answers`` where it has one.
    replies: Sequence[Mapping[str, Any]] = field(default_factory=list)
    notices: Sequence[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    afterwards: list[Callable[[], None]] = field(default_factory=list)
    # Push the notices before answering: what the caller does next (a send after a
    # distribute) must not reach the other devices before them.
    notices_first: bool = False
