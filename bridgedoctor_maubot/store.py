"""What the plugin remembers across restarts, in its instance database (migrations.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from mautrix.util.async_db import Database

HELPER = "*helper"  # watch_status row of the helper itself; no bridge name starts with '*'
PlanState = Literal["waiting", "running"]


@dataclass(frozen=True)
class OpenPlan:
    code: str
    kind: str
    bridge: str
    room_id: str
    event_id: str
    state: PlanState


class Store:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- watch -------------------------------------------------------------------------------

    async def statuses(self) -> dict[str, str]:
        rows = await self._db.fetch("SELECT bridge, status FROM watch_status")
        return {str(r["bridge"]): str(r["status"]) for r in rows}

    async def save_statuses(self, changed: dict[str, str], gone: list[str]) -> None:
        """Record the statuses just posted (and forget bridges no longer deployed), at once."""
        now = int(time.time())
        async with self._db.acquire() as conn, conn.transaction():
            for bridge in gone:
                await conn.execute("DELETE FROM watch_status WHERE bridge=$1", bridge)
            for bridge, status in changed.items():
                await conn.execute(
                    "INSERT INTO watch_status (bridge, status, changed_at) VALUES ($1, $2, $3) "
                    "ON CONFLICT (bridge) DO UPDATE SET status=$2, changed_at=$3",
                    bridge,
                    status,
                    now,
                )

    # --- plans -------------------------------------------------------------------------------

    async def open_plan(self, plan: OpenPlan) -> None:
        await self._db.execute(
            "INSERT INTO open_plan (code, kind, bridge, room_id, event_id, state) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO UPDATE SET state=$6",
            plan.code,
            plan.kind,
            plan.bridge,
            plan.room_id,
            plan.event_id,
            plan.state,
        )

    async def mark_plan(self, code: str, state: PlanState) -> None:
        await self._db.execute("UPDATE open_plan SET state=$2 WHERE code=$1", code, state)

    async def close_plan(self, code: str) -> None:
        await self._db.execute("DELETE FROM open_plan WHERE code=$1", code)

    async def open_plans(self) -> list[OpenPlan]:
        rows = await self._db.fetch(
            "SELECT code, kind, bridge, room_id, event_id, state FROM open_plan ORDER BY code"
        )
        return [
            OpenPlan(
                str(r["code"]),
                str(r["kind"]),
                str(r["bridge"]),
                str(r["room_id"]),
                str(r["event_id"]),
                "running" if r["state"] == "running" else "waiting",
            )
            for r in rows
        ]
