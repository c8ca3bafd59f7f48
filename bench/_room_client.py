"""One SDK command in its own process, so its CPU time is the client's alone.

``python -m bench._room_client HOME PROFILE PASSPHRASE create LABEL USER...`` or
``... send TARGET TEXT`` prints one JSON line: wall and CPU seconds, bytes
sent and received on the socket, and the requests made by action.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sotto.client import session as session_module
from sotto.client.messenger import Messenger
from sotto.client.profile import Profile


def main() -> None:
    home, name, passphrase, command, *args = sys.argv[1:]
    sent = Counter[str]()
    received = [0]
    requests = Counter[str]()
    original_send = session_module.Session._send
    original_receive = session_module.Session._receive

    waited: defaultdict[str, float] = defaultdict(float)

    def counting_send(self: Any, frame: dict[str, Any]) -> None:
        data = json.dumps(frame, separators=(",", ":"))
        sent["bytes"] += len(data)
        requests[str(frame.get("action"))] += 1
        original_send(self, frame)

    def counting_receive(self: Any, action: str, deadline: float) -> dict[str, Any]:
        begun = time.perf_counter()
        frame = original_receive(self, action, deadline)
        waited[action] += time.perf_counter() - begun
        received[0] += len(json.dumps(frame, separators=(",", ":")))
        return frame

    session_module.Session._send = counting_send  # type: ignore[method-assign]
    session_module.Session._receive = counting_receive  # type: ignore[method-assign]

    started, cpu = time.perf_counter(), time.process_time()
    profile = Profile.open(name, Path(home))
    with Messenger.open(
        profile, profile.read_info(), profile.load_keys(passphrase), passphrase
    ) as m:
        if command == "create":
            label, *users = args
            result: Any = m.create_room(label, users)
        elif command == "add":
            target, *users = args
            m.add_members(target, users)
            result = len(users)
        elif command == "replace":  # a room at its cap: one member leaves, another joins
            target, gone, joining = args
            m.remove_members(target, [gone])
            m.add_members(target, [joining])
            result = 1
        else:
            target, text = args
            result = m.send_text(target, text).seq
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "result": result,
                "wall_s": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,
                "peak_rss_mb": usage.ru_maxrss / 1024,
                "bytes_up": sent["bytes"],
                "bytes_down": received[0],
                "requests": dict(requests),
                "waited_s": {k: round(v, 2) for k, v in waited.items()},
            }
        )
    )


if __name__ == "__main__":
    import os

    if os.environ.get("SOTTO_BENCH_PROFILE"):
        import cProfile
        import pstats

        cProfile.run("main()", "/tmp/room_client.prof")
        stats = pstats.Stats("/tmp/room_client.prof", stream=sys.stderr)
        stats.sort_stats("cumtime").print_stats(40)
    else:
        main()
