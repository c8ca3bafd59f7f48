"""The ``sotto`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sotto" / "local"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sotto", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the whole backend on this machine")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser("up", help="start the local stack until Ctrl-C")
    up.add_argument("--port", type=int, default=0, help="WebSocket port (default: any free)")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where endpoints.json is written (default: {_default_data_dir()})",
    )
    # Shorter limits let a client's reconnect logic be exercised in seconds.
    up.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="close sockets idle this long, as API Gateway does after 10 minutes",
    )
    up.add_argument(
        "--max-connection",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="close sockets open this long, as API Gateway does after 2 hours",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "local" and args.local_command == "up":
        # Imported here: the local stack pulls in moto, which the client does not need.
        from sotto.local.gateway import GatewayLimits
        from sotto.local.stack import run

        if not 0 <= args.port <= 65535:
            print("sotto: --port must be between 0 and 65535", file=sys.stderr)
            return 2
        if args.idle_timeout <= 0 or args.max_connection <= 0:
            print("sotto: timeouts must be positive", file=sys.stderr)
            return 2
        limits = GatewayLimits(
            idle_timeout_seconds=args.idle_timeout, max_connection_seconds=args.max_connection
        )
        return run(args.data_dir or _default_data_dir(), args.port, limits)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
