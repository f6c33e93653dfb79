"""The chaos suite's bounded part (tests/support/chaos.py; the whole is scripts/chaos): the real
CLI killed from outside (process-group SIGKILL) at every step each operation records, a reboot
that starts the enabled unit after half of them, the backup disk filling at each moment; then
seeded random trials (random kill times, reboots, full disks, an admin-stopped unit, recovery
killed too, the real helper killed instead of the CLI). Each trial must end untouched or fully
reset with a backup that restores exactly, the unit as the admin had it, nothing unfinished or
locked, no row the bridge wrote lost."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support.chaos import World, plan
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd

SEED = 9


@pytest.mark.parametrize(("engine", "every_step", "random_trials"), [
    ("postgres", True, 4),
    ("sqlite", False, 8),
])  # fmt: skip
def test_chaos(
    tmp_path: Path, pg: PgServer, systemd: Systemd, engine: str, every_step: bool,
    random_trials: int,
) -> None:  # fmt: skip
    rng = random.Random(f"{SEED}-{engine}")
    world = World(tmp_path, pg, engine, rows=2000, sd=systemd)
    world.calibrate()
    trials = plan(rng, every_step, random_trials)
    assert any(t.via == "helper" for t in trials)
    results = [world.trial(t, rng) for t in trials]
    failed = [f"{r.trial}: {r.problems}" for r in results if r.problems]
    assert not failed, "\n".join(failed)
    if every_step:  # the kills land mid-operation and reach both ends: some roll back, some finish
        killed = [r for r in results if r.killed_after != "(ran to its end)"]
        assert len(killed) >= len(results) // 2, [r.killed_after for r in results]
        outcomes = {r.outcome for r in killed}
        assert {"untouched", "crypto reset", "full reset"} <= outcomes, outcomes
