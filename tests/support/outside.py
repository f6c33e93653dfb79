"""Driving the real CLI from outside, as a host's failures would: its own process group, killed
with SIGKILL at any moment (no hook inside the code), and a way to wait for what it records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def spawn(*argv: str, **env: str) -> subprocess.Popen[str]:
    """The CLI in a new session (its own process group, systemctl calls included)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bridgedoctor.cli.main", *argv],
        env=cli_env(**env),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*argv: str, timeout: float = 600, **env: str) -> tuple[int, str]:
    """Run the CLI to its end; (exit code, stdout + stderr)."""
    p = spawn(*argv, **env)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def kill_group(p: subprocess.Popen[str]) -> None:
    """SIGKILL the whole process group, then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()


def wait_until(
    probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.005, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        time.sleep(every)


def manifests(bridge_dir: Path) -> list[dict[str, Any]]:
    """Every manifest as written on disk now (renamed into place whole, so never torn)."""
    out = []
    for p in sorted(bridge_dir.glob("*/manifest.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def manifest_where(
    bridge_dir: Path, test: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    return next((m for m in manifests(bridge_dir) if test(m)), None)


def steps(m: dict[str, Any]) -> list[str]:
    return [s["step"] for s in m.get("steps", [])]
