"""Run the steps of a reset or restore under its manifest.

Each step is idempotent and is recorded in the manifest only after it has finished, so a crash
leaves the manifest at most one step behind reality and re-running that step is harmless.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..dbpin import DbPin
from ..diagnose import Options
from . import backup, crypto, full, paths, services
from .dbio import Db, open_db, snapshot
from .errors import ResetError
from .manifest import Manifest, State
from .progress import Progress
from .target import Bridge, resolve

# Test hook at the process boundary: the process dies right after the named step has finished
# and before the manifest records it, the worst moment for a crash. Documented in docs/reset.md.
CRASH_ENV = "BRIDGEDOCTOR_CRASH_AT"

RESET_STEPS = {
    "crypto": ("stop", "backup", "verify", "apply", "start"),
    "full": ("stop", "backup", "verify", "clear_db", "clear_data", "start"),
}
RESTORE_STEPS = {
    "crypto": ("stop", "restore_db", "start"),
    "full": ("stop", "restore_db", "restore_data", "check", "start"),
}
STATE_AFTER: dict[str, State] = {
    "verify": "backed_up",
    "apply": "applied",
    "clear_data": "applied",
    "restore_db": "applied",
}


def crashpoint(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


def options_of(m: Manifest) -> Options:
    o = m.extra["options"]
    pins = {b: DbPin(**p) for b, p in (o.get("db_pins") or {}).items()}
    return Options(
        root=Path(o["root"]), systemd_dir=Path(o["systemd_dir"]), db_host=o["db_host"],
        db_pins=pins,
    )  # fmt: skip


def options_dict(opts: Options) -> dict[str, Any]:
    return {
        "root": str(opts.root), "systemd_dir": str(opts.systemd_dir), "db_host": opts.db_host,
        "db_pins": {b: asdict(p) for b, p in opts.db_pins.items()},
    }  # fmt: skip


@dataclass
class Ctx:
    m: Manifest
    bridge: Bridge
    source: Manifest | None = None  # for a restore: the reset whose backup is put back
    progress: Progress = field(default_factory=lambda: Progress(None))
    _db: Db | None = field(default=None, repr=False)

    @classmethod
    def of(cls, m: Manifest, source: Manifest | None = None) -> Ctx:
        return cls(m, resolve(m.bridge, options_of(m)), source)

    async def db(self) -> Db:
        if self._db is None:
            if not isinstance(self.bridge.db, full.SqliteTarget) or self.bridge.db.path.exists():
                self._db = await open_db(self.bridge.db)
            else:
                raise ResetError(f"the database {self.bridge.db.location} does not exist.")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


async def drive(ctx: Ctx, steps: tuple[str, ...]) -> None:
    try:
        for index, step in enumerate(steps, 1):
            if step in ctx.m.done_steps():
                continue
            ctx.progress.step(step, index, len(steps))
            await STEP[step](ctx)
            crashpoint(step)
            ctx.m.step(step, STATE_AFTER.get(step))
        ctx.m.state = "done"
        ctx.m.save()
    finally:
        await ctx.close()


async def _stop(ctx: Ctx) -> None:
    services.stop(ctx.m.unit)
    # The container could move paths until it was gone (reset/paths.py).
    ctx.bridge.after_stop(whole_tree=ctx.m.mode == "full", was_active=ctx.m.was_active)


async def _start(ctx: Ctx) -> None:
    if ctx.m.was_active:
        services.start(ctx.m.unit)


async def _backup(ctx: Ctx) -> None:
    m, dest = ctx.m, ctx.m.dir
    db = await ctx.db()
    if m.mode == "crypto":
        # No snapshot: a crypto reset is verified file by file against the dump and never
        # compares whole-database digests (a sorted pass over every table, a third of the time).
        m.tables = await crypto.backup(db, dest, ctx.progress)
        return
    m.snapshot = {t: {"rows": s.rows, "sha256": s.sha256} for t, s in (await snapshot(db)).items()}
    info = await full.backup_db(db, dest)
    m.tables, m.extra["db"] = info.pop("files", {}), info
    data = ctx.bridge.data_dir
    m.data_dir = str(data)
    m.data_digest = backup.dir_digest(data)
    m.data_tar_sha256 = backup.tar_dir(data, dest / "data.tar")
    db_path = getattr(ctx.bridge.db, "path", None)
    if db_path is not None and not db_path.is_relative_to(data):
        shutil.copy2(db_path, dest / "database.sqlite")


async def _verify(ctx: Ctx) -> None:
    m, db = ctx.m, await ctx.db()
    if m.mode == "crypto":
        await crypto.verify(db, m.dir, m.tables)
        return
    await full.verify_db(db, m.dir, {"files": m.tables})
    backup.verify_tar(m.dir / "data.tar", m.data_tar_sha256, Path(m.data_dir))
    now = {t: {"rows": s.rows, "sha256": s.sha256} for t, s in (await snapshot(db)).items()}
    if now != m.snapshot:
        raise ResetError("the database changed while it was backed up; aborted.")


async def _apply(ctx: Ctx) -> None:
    db = await ctx.db()
    await crypto.apply(db, await db.tables())


async def _clear_db(ctx: Ctx) -> None:
    t = ctx.bridge.db
    if isinstance(t, full.SqliteTarget):
        await ctx.close()
        full.clear_sqlite(t)
    else:
        await full.clear_db(await ctx.db())


async def _clear_data(ctx: Ctx) -> None:
    backup.clear_dir(ctx.bridge.data_dir)


async def _restore_db(ctx: Ctx) -> None:
    src = ctx.source
    assert src is not None
    if src.mode == "crypto":
        await crypto.restore(await ctx.db(), src.dir, src.tables, ctx.progress)
    elif isinstance(ctx.bridge.db, full.SqliteTarget):
        copy = src.dir / "database.sqlite"
        if copy.exists():
            await ctx.close()
            full.clear_sqlite(ctx.bridge.db)
            paths.copy_new(copy, ctx.bridge.db.path)
    else:
        await full.restore_db(await ctx.db(), src.dir, {**src.extra["db"], "files": src.tables})


async def _restore_data(ctx: Ctx) -> None:
    src = ctx.source
    assert src is not None
    await ctx.close()  # a SQLite database is replaced by the untar
    tar = src.dir / "data.tar"
    backup.verify_tar_sha(tar, src.data_tar_sha256)
    backup.untar_into(tar, ctx.bridge.data_dir)


async def _check(ctx: Ctx) -> None:
    """A full restore must give back exactly what was backed up: every table, the data dir."""
    src = ctx.source
    assert src is not None
    if backup.dir_digest(ctx.bridge.data_dir) != src.data_digest:
        raise ResetError("the restored data directory differs from the backup.", touched=True)
    now = {
        t: {"rows": s.rows, "sha256": s.sha256}
        for t, s in (await snapshot(await ctx.db())).items()
    }
    if now != src.snapshot:
        raise ResetError("the restored database differs from the backup.", touched=True)


STEP = {
    "stop": _stop,
    "start": _start,
    "backup": _backup,
    "verify": _verify,
    "apply": _apply,
    "clear_db": _clear_db,
    "clear_data": _clear_data,
    "restore_db": _restore_db,
    "restore_data": _restore_data,
    "check": _check,
}
