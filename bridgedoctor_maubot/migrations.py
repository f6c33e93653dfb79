"""The plugin's instance database (maubot gives each instance its own SQLite file or Postgres
schema): versioned with mautrix's UpgradeTable, as maubot/rss does.

Add a change as a new `@upgrade_table.register` step at the end and raise `upgrades_to` of the
first step, which creates the newest schema on a fresh instance in one go.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection, UpgradeTable

upgrade_table = UpgradeTable()


@upgrade_table.register(description="Latest revision", upgrades_to=1)
async def upgrade_latest(conn: Connection) -> None:
    # The last status the watch posted per bridge; '*helper' is the helper itself. What makes a
    # restart neither repeat an alert nor miss a change.
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS watch_status (
            bridge     TEXT PRIMARY KEY,
            status     TEXT NOT NULL,
            changed_at BIGINT NOT NULL
        )"""
    )
    # Plans posted to the room and not finished yet (waiting for ✅, or running), so that a
    # restarted plugin can answer each one instead of leaving it hanging.
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS open_plan (
            code     TEXT PRIMARY KEY,
            kind     TEXT NOT NULL,
            bridge   TEXT NOT NULL,
            room_id  TEXT NOT NULL,
            event_id TEXT NOT NULL,
            state    TEXT NOT NULL
        )"""
    )
