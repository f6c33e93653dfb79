"""The `check all` floor as a whole process, loading only what the floor needs:

    python bench/floor_check.py BRIDGES.json pg HOST PORT
    python bench/floor_check.py BRIDGES.json sqlite

BRIDGES.json: a list of [config.yaml, data dir, key that opens the account].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floors import FloorBridge, pg_fleet, sqlite_fleet  # noqa: E402


def main() -> int:
    bridges = [
        FloorBridge(Path(c), Path(d), k) for c, d, k in json.loads(Path(sys.argv[1]).read_text())
    ]
    if sys.argv[2] == "pg":
        import asyncio

        opened = asyncio.run(pg_fleet(bridges, sys.argv[3], int(sys.argv[4])))
    else:
        opened = sqlite_fleet(bridges)
    print(f"{sum(opened)} of {len(opened)} accounts open")
    return 0 if all(opened) else 1


if __name__ == "__main__":
    raise SystemExit(main())
