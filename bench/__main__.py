"""Run every ``bench/bench_*.py`` module's ``main()``, then the soak (``bench/soak.py``,
small by default); each prints its own table.

A module that fails is reported and the others still run; the exit status
is non-zero if any failed (the soak fails on any lost, duplicated or
out-of-order delivery).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    names.append("soak")
    failed = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
