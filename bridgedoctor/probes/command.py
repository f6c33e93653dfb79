"""Run a host tool (systemctl, journalctl) with a time and size bound; never hang, never raise.

A probe asks the host something it cannot compute itself; if the tool is missing, slow or
chatty, the answer is "could not determine" (a ProbeError), never a hung check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass

from ..facts import ProbeError

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# What systemd's tools read from the environment: no pager, no colours, no localisation.
_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
}


@dataclass(frozen=True)
class Output:
    returncode: int
    stdout: bytes
    stderr: str  # first line only: enough to say why
    truncated: bool  # stdout hit the byte bound; the rest was not read


async def run(
    argv: list[str],
    *,
    code: str,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Output | ProbeError:
    """`argv` with PATH lookup of argv[0]; ProbeError(code, sentence) if it cannot answer."""
    exe = shutil.which(argv[0])
    if exe is None:
        return ProbeError(code, f"{argv[0]} is not installed or not on PATH.")
    env = {**{k: v for k, v in os.environ.items() if k == "PATH"}, **_ENV}
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            *argv[1:],
            # A pipe closed at once rather than /dev/null: the helper opens no path it does not
            # need (tests/test_helper_property.py records every open).
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # Its own process group: a kill reaches whatever it started too.
            start_new_session=True,
        )
    except OSError as e:
        return ProbeError(code, f"{argv[0]} could not be run ({type(e).__name__}).")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.close()

    async def collect() -> tuple[bytes, bytes, bool]:
        assert proc.stdout is not None and proc.stderr is not None
        err_task = asyncio.ensure_future(proc.stderr.read(4096))
        chunks: list[bytes] = []
        size = 0
        truncated = False
        try:
            while True:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                if size + len(chunk) > max_bytes:
                    chunks.append(chunk[: max_bytes - size])
                    truncated = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            if truncated:
                _kill(proc)
                # asyncio's wait() returns only once every pipe is closed, and a stdout paused
                # with a full buffer never reads its EOF: drain what the killed tool left.
                while await proc.stdout.read(65536):
                    pass
            await proc.wait()
            # A child that outlived it may hold stderr open: do not wait for its end.
            done, _ = await asyncio.wait({err_task}, timeout=1.0)
            return b"".join(chunks), err_task.result() if done else b"", truncated
        finally:
            err_task.cancel()

    try:
        out, err, truncated = await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
        _kill(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 1.0)
        return ProbeError(code, f"{argv[0]} did not answer within {timeout:g} s.")
    first = err.decode("utf-8", "replace").strip().splitlines()
    return Output(proc.returncode or 0, out, first[0][:200] if first else "", truncated)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
