"""systemd control through the `systemctl` found on PATH (tests put a fake one first)."""

from __future__ import annotations

import shutil
import subprocess
import time

from .errors import ResetError

STOP_SETTLE_SECONDS = 30.0
# systemd's own default job timeout is 90 s a stop or start; a client still waiting after this
# is stuck (a hung D-Bus, a job queued behind another), and the reset must not wait forever.
SYSTEMCTL_TIMEOUT = 300.0
INACTIVE = ("inactive", "failed")


def _systemctl(*args: str, touched: bool = False) -> subprocess.CompletedProcess[str]:
    """`touched`: whether a call that never finishes leaves the bridge changed (a start is
    the last step of a reset, so by then it is)."""
    exe = shutil.which("systemctl")
    if exe is None:
        raise ResetError("systemctl is not on PATH; cannot stop the bridge safely.")
    try:
        return subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ResetError(
            f"systemctl {' '.join(args)} did not finish within {SYSTEMCTL_TIMEOUT:.0f} s;"
            " see systemctl list-jobs.",
            touched=touched,
        ) from None


def state(unit: str) -> str:
    r = _systemctl("show", "-p", "ActiveState", "--value", unit)
    if r.returncode != 0:
        raise ResetError(f"systemctl cannot tell the state of {unit}.")
    return r.stdout.strip()


def is_active(unit: str) -> bool:
    return state(unit) not in INACTIVE


def stop(unit: str) -> None:
    """Stop and prove it: the database is only touched once the unit is really inactive."""
    r = _systemctl("stop", unit)
    if r.returncode != 0:
        raise ResetError(f"systemctl stop {unit} failed; nothing was changed.")
    deadline = time.monotonic() + STOP_SETTLE_SECONDS
    while True:
        s = state(unit)
        if s in INACTIVE:
            return
        # "deactivating" may still settle; anything else means it is running (Restart=, a
        # concurrent start): abort rather than write under a live bridge.
        if s != "deactivating" or time.monotonic() > deadline:
            raise ResetError(f"{unit} is still {s} after systemctl stop; nothing was changed.")
        time.sleep(0.2)


def start(unit: str) -> None:
    r = _systemctl("start", unit, touched=True)
    if r.returncode != 0:
        raise ResetError(f"systemctl start {unit} failed; see journalctl -u {unit}.", touched=True)


def restart(unit: str) -> None:
    """Start the unit afresh, whatever it was doing: crash-looping, failed, or stopped."""
    # A unit that hit its start limit refuses even a restart until its failure is reset.
    _systemctl("reset-failed", unit, touched=True)
    r = _systemctl("restart", unit, touched=True)
    if r.returncode != 0:
        raise ResetError(
            f"systemctl restart {unit} failed; see journalctl -u {unit}.", touched=True
        )


def settle(unit: str, was_active: bool) -> None:
    """Leave the unit as the admin had it before the reset or restore: running if it ran,
    stopped if it did not (a reboot in between may have started an enabled unit). A unit
    already running is left alone (a refusal after the stop may have started it again)."""
    if was_active:
        if state(unit) != "active":
            start(unit)
    elif is_active(unit):
        try:
            stop(unit)
        except ResetError:
            raise ResetError(
                f"{unit} was not running before, but it would not stop again.", touched=True
            ) from None
