"""The reset's systemd control, in process, against a `systemctl` on PATH: the fake one of the
reset tests, or a few lines of shell where a test needs systemd to answer in a way the fake
never does (a state it cannot tell, a stop that settles slowly)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bridgedoctor.reset import services
from bridgedoctor.reset.errors import ResetError
from tests.support.reset_env import RESET_UNIT as UNIT
from tests.support.reset_env import Systemd


def own_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """A `systemctl` that is only `body` (sh), first on PATH; returns its call log."""
    bin_dir = tmp_path / "own-bin"
    bin_dir.mkdir()
    exe = bin_dir / "systemctl"
    log = tmp_path / "own-calls"
    exe.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{body}\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def settles_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shows: int) -> Path:
    """A unit whose stop is accepted and that reads `deactivating` for `shows` state queries,
    then `inactive`."""
    count = tmp_path / "shows"
    count.write_text("0")
    return own_systemctl(
        tmp_path,
        monkeypatch,
        f'case "$1" in stop) exit 0 ;; show) n=$(($(cat {count}) + 1)); echo $n > {count}\n'
        f"  if [ $n -le {shows} ]; then echo deactivating; else echo inactive; fi ;; esac",
    )


def test_no_systemctl_on_path_is_a_plain_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ResetError) as e:
        services.stop(UNIT)
    assert str(e.value) == "systemctl is not on PATH; cannot stop the bridge safely."
    assert not e.value.touched


def test_a_state_systemd_cannot_tell_is_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_systemctl(tmp_path, monkeypatch, "exit 1")
    with pytest.raises(ResetError) as e:
        services.is_active(UNIT)
    assert str(e.value) == f"systemctl cannot tell the state of {UNIT}."


def test_a_stop_waits_while_the_unit_is_deactivating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = settles_after(tmp_path, monkeypatch, shows=3)
    began = time.monotonic()
    services.stop(UNIT)
    took = time.monotonic() - began
    assert (
        log.read_text().splitlines()
        == [f"stop {UNIT}"] + [f"show -p ActiveState --value {UNIT}"] * 4
    )
    # Three polls a fifth of a second apart, not seconds apart: the reset goes on as soon as
    # the unit is down.
    assert took < 2.0, took


def test_a_unit_still_deactivating_at_the_deadline_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settles_after(tmp_path, monkeypatch, shows=1_000_000)
    monkeypatch.setattr(services, "STOP_SETTLE_SECONDS", 0.5)
    began = time.monotonic()
    with pytest.raises(ResetError) as e:
        services.stop(UNIT)
    assert str(e.value) == (
        f"{UNIT} is still deactivating after systemctl stop; nothing was changed."
    )
    assert not e.value.touched
    assert 0.5 <= time.monotonic() - began < 5.0


def _unhang_after(systemd: Systemd, seconds: float) -> threading.Timer:
    """Lift the hang later, so that code without a timeout ends (and fails) instead of
    hanging the suite."""
    t = threading.Timer(seconds, systemd.hang_start, (UNIT,), {"on": False})
    t.start()
    return t


def test_a_start_that_never_finishes_is_given_up_and_counts_as_touched(
    systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "SYSTEMCTL_TIMEOUT", 1.0)
    systemd.set(UNIT, "inactive")
    systemd.hang_start(UNIT)
    t = _unhang_after(systemd, 8.0)
    try:
        with pytest.raises(ResetError) as e:
            services.start(UNIT)
    finally:
        t.cancel()
        systemd.hang_start(UNIT, on=False)
    assert str(e.value) == (
        f"systemctl start {UNIT} did not finish within 1 s; see systemctl list-jobs."
    )
    assert e.value.touched  # the reset's changes are behind it by the time it starts


def test_a_stop_that_never_finishes_is_given_up_untouched(
    systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "SYSTEMCTL_TIMEOUT", 1.0)
    hook = systemd.state / f"{UNIT}.on-stop"
    hook.write_text("#!/bin/sh\nsleep 8\n")  # the bridge's SIGTERM handler, stuck
    hook.chmod(0o755)
    with pytest.raises(ResetError) as e:
        services.stop(UNIT)
    assert str(e.value) == (
        f"systemctl stop {UNIT} did not finish within 1 s; see systemctl list-jobs."
    )
    assert not e.value.touched


def test_a_failed_start_counts_as_touched(systemd: Systemd) -> None:
    systemd.set(UNIT, "inactive")
    systemd.refuse_start_once(UNIT)
    with pytest.raises(ResetError) as e:
        services.start(UNIT)
    assert str(e.value) == f"systemctl start {UNIT} failed; see journalctl -u {UNIT}."
    assert e.value.touched is True
    assert systemd.get(UNIT) == "inactive"


def test_restart_clears_a_start_limit_first(systemd: Systemd) -> None:
    systemd.set(UNIT, "failed")
    services.restart(UNIT)
    assert systemd.calls() == [f"reset-failed {UNIT}", f"restart {UNIT}"]
    assert systemd.get(UNIT) == "active"


def test_a_failed_restart_counts_as_touched(systemd: Systemd) -> None:
    systemd.refuse_start_once(UNIT)
    with pytest.raises(ResetError) as e:
        services.restart(UNIT)
    assert str(e.value) == f"systemctl restart {UNIT} failed; see journalctl -u {UNIT}."
    assert e.value.touched is True


def test_settle_leaves_a_running_unit_alone(systemd: Systemd) -> None:
    services.settle(UNIT, was_active=True)
    assert systemd.calls() == [f"show -p ActiveState --value {UNIT}"]
    assert systemd.get(UNIT) == "active"


def test_settle_starts_a_unit_that_ran_before(systemd: Systemd) -> None:
    systemd.set(UNIT, "inactive")
    services.settle(UNIT, was_active=True)
    assert systemd.calls()[-1] == f"start {UNIT}"
    assert systemd.get(UNIT) == "active"


def test_settle_stops_a_unit_that_did_not_run_before(systemd: Systemd) -> None:
    services.settle(UNIT, was_active=False)  # a reboot in between started it
    assert f"stop {UNIT}" in systemd.calls()
    assert systemd.get(UNIT) == "inactive"


def test_settle_leaves_a_stopped_unit_stopped(systemd: Systemd) -> None:
    systemd.set(UNIT, "failed")
    services.settle(UNIT, was_active=False)
    assert systemd.calls() == [f"show -p ActiveState --value {UNIT}"]


def test_settle_says_when_a_unit_will_not_stop_again(systemd: Systemd) -> None:
    systemd.refuse_stop_once(UNIT)  # Restart=always brings it straight back
    with pytest.raises(ResetError) as e:
        services.settle(UNIT, was_active=False)
    assert str(e.value) == f"{UNIT} was not running before, but it would not stop again."
    assert e.value.touched is True
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_refused_stop_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = own_systemctl(tmp_path, monkeypatch, 'case "$1" in stop) exit 1 ;; esac; echo active')
    with pytest.raises(ResetError) as e:
        services.stop(UNIT)
    assert str(e.value) == f"systemctl stop {UNIT} failed; nothing was changed."
    assert not e.value.touched
    assert log.read_text().splitlines() == [f"stop {UNIT}"]  # no state polled after a refusal


@pytest.mark.parametrize("hung", ["reset-failed", "restart"])
def test_a_restart_that_never_finishes_counts_as_touched(
    hung: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply restarts the bridge after writing its config: a hung call leaves it changed."""
    monkeypatch.setattr(services, "SYSTEMCTL_TIMEOUT", 1.0)
    own_systemctl(tmp_path, monkeypatch, f'[ "$1" = {hung} ] && exec sleep 8; exit 0')
    with pytest.raises(ResetError) as e:
        services.restart(UNIT)
    assert str(e.value).startswith(f"systemctl {hung} {UNIT} did not finish within 1 s")
    assert e.value.touched is True
