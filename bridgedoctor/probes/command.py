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
    returncode: int  # negative: killed by that signal
    stdout: bytes
    # Every line the tool said on stderr within its first 4 KiB, blank ones left out, each cut
    # to 200 characters: systemd's tools may warn first (a journal file they skip) and say
    # what went wrong last.
    stderr: tuple[str, ...]
    truncated: bool  # stdout hit the byte bound; the rest was not read


def ended(returncode: int) -> str:
    """How a tool ended, in words ("exit status 3", "killed by signal 9")."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


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
    # stdout and stderr are pipes of our own, not asyncio's: asyncio keeps its pipe open until
    # it reads EOF, and a child the tool left behind (a session of its own, out of reach of the
    # kill) may hold them open for as long as it lives. Ours are closed when we are done, so
    # no answer leaves a descriptor behind, however the tool ends. Both are read as they come
    # (a tool that says much must not fill a pipe and stall).
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        for fd in (out_read, err_read):
            os.set_blocking(fd, False)
        try:
            proc = await asyncio.create_subprocess_exec(
                exe,
                *argv[1:],
                # A pipe closed at once rather than /dev/null: the helper opens no path it does
                # not need (tests/test_helper_property.py records every open).
                stdin=asyncio.subprocess.PIPE,
                stdout=out_write,
                stderr=err_write,
                env=env,
                # Its own process group: a kill reaches whatever it started too.
                start_new_session=True,
            )
        except OSError as e:
            return ProbeError(code, f"{argv[0]} could not be run ({type(e).__name__}).")
        finally:
            os.close(out_write)
            os.close(err_write)
        return await _answer(proc, argv[0], code, timeout, max_bytes, out_read, err_read)
    finally:
        loop = asyncio.get_running_loop()
        for fd in (out_read, err_read):
            loop.remove_reader(fd)
            os.close(fd)


async def _answer(
    proc: asyncio.subprocess.Process,
    name: str,
    code: str,
    timeout: float,
    max_bytes: int,
    out_read: int,
    err_read: int,
) -> Output | ProbeError:
    assert proc.stdin is not None
    proc.stdin.close()
    loop = asyncio.get_running_loop()
    said = bytearray()  # its first 4 KiB of stderr: enough to say why
    chunks: list[bytes] = []
    size = 0
    truncated = False
    done: asyncio.Future[None] = loop.create_future()  # stdout's end, or the byte bound

    def hear() -> None:
        """Read what waits in stderr (none: a child the tool left behind may hold it open)."""
        try:
            chunk = os.read(err_read, 65536)
        except BlockingIOError:
            return
        if not chunk:
            loop.remove_reader(err_read)
        said.extend(chunk[: 4096 - len(said)])

    def take() -> None:
        nonlocal size, truncated
        try:
            chunk = os.read(out_read, 65536)
        except BlockingIOError:
            return
        if len(chunk) > max_bytes - size:
            chunk = chunk[: max_bytes - size]
            truncated = True
        chunks.append(chunk)
        size += len(chunk)
        if truncated or not chunk:
            loop.remove_reader(out_read)
            if not done.done():
                done.set_result(None)

    loop.add_reader(err_read, hear)
    loop.add_reader(out_read, take)

    async def collect() -> None:
        await done
        if truncated:
            _kill(proc)
        await proc.wait()

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
        _kill(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 1.0)
        return ProbeError(code, f"{name} did not answer within {timeout:g} s.")
    except asyncio.CancelledError:  # the caller gave up first (a helper request's deadline)
        _kill(proc)
        raise
    hear()  # the rest the tool said: at most a pipe's 64 KiB, one read
    text = bytes(said).decode("utf-8", "replace").splitlines()
    lines = tuple(line.strip()[:200] for line in text if line.strip())
    return Output(proc.returncode or 0, b"".join(chunks), lines, truncated)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
