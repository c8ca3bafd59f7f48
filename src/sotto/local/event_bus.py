"""Records, locally, every event the handlers publish to EventBridge.

moto accepts ``PutEvents`` and keeps nothing a test can read back, so the
local stack also appends each published entry, as the handler sent it, to
``DATA_DIR/eventbridge.jsonl`` (one JSON object per line). Tests read that
to see what the agency's monitoring would have received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["EVENTS_FILE", "EventBusRecorder", "read_events"]

EVENTS_FILE = "eventbridge.jsonl"


class EventBusRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def install(self, session: Any) -> None:
        session.events.register("provide-client-params.events.PutEvents", self._on_put_events)

    def _on_put_events(self, params: Mapping[str, Any], **_: Any) -> None:
        with self._lock, self.path.open("a") as out:
            for entry in params.get("Entries", []):
                out.write(json.dumps(dict(entry), sort_keys=True) + "\n")


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
