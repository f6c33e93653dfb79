"""A unit's state from `systemctl show`: is it running, since when, how often it restarted.

Reusable by anything that must watch a unit (a check, `logs`, verifying after a change): `show`
answers once; a caller that follows a unit calls it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ..facts import ProbeError, ServiceFacts
from .command import DEFAULT_TIMEOUT, Output, ended, run

PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "NRestarts",
    "ExecMainStartTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "InvocationID",
)
# ExecMainCode is the waitid() si_code: CLD_EXITED, CLD_KILLED, CLD_DUMPED.
_EXIT_CODES = {"1": "exited", "2": "killed", "3": "dumped"}
CODE = "service_unknown"
MAX_BYTES = 64 * 1024  # a unit's answer: a few hundred bytes in practice


def now_mono() -> int:
    """CLOCK_MONOTONIC in µs: the clock systemd and journald stamp units and entries with."""
    return time.monotonic_ns() // 1000


def parse(unit: str, text: str, now: int) -> ServiceFacts | ProbeError:
    """`systemctl show` output (NAME=value lines) as ServiceFacts."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    missing = [p for p in ("LoadState", "ActiveState", "SubState") if not values.get(p)]
    if missing:
        return ProbeError(CODE, f"systemctl show {unit} did not report {', '.join(missing)}.")

    def number(name: str) -> int:
        try:
            return int(values.get(name) or 0)
        except ValueError:
            return 0

    start = number("ExecMainStartTimestampMonotonic")
    code = _EXIT_CODES.get(values.get("ExecMainCode", ""), "")
    return ServiceFacts(
        unit=unit,
        load_state=values["LoadState"],
        active_state=values["ActiveState"],
        sub_state=values["SubState"],
        result=values.get("Result", ""),
        exit_code=code,
        exit_status=number("ExecMainStatus") if code else None,
        restarts=number("NRestarts"),
        main_start_mono=start,
        active_enter_mono=number("ActiveEnterTimestampMonotonic"),
        age=max(0.0, (now - start) / 1e6) if start else None,
        invocation=values.get("InvocationID", ""),
    )


async def show(unit: str, *, timeout: float = DEFAULT_TIMEOUT) -> ServiceFacts | ProbeError:
    """The unit's state now, or ProbeError("service_unknown", why) within `timeout`."""
    out = await run(
        ["systemctl", "show", unit, "--no-pager", f"--property={','.join(PROPERTIES)}"],
        code=CODE,
        timeout=timeout,
        max_bytes=MAX_BYTES,
    )
    if isinstance(out, ProbeError):
        return out
    return _answer(unit, out)


async def show_many(
    units: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, ServiceFacts | ProbeError]:
    """Several units' states from one `systemctl show` (a fleet check starts one process, not
    one per bridge). systemctl answers one block per unit, each with its Id; a unit without
    a block of its own is asked alone, and so is the unit of the last block of an answer cut
    short or killed part-way (that block may end anywhere)."""
    if not units:
        return {}
    out = await run(
        ["systemctl", "show", *units, "--no-pager", f"--property={','.join(PROPERTIES)}"],
        code=CODE,
        timeout=timeout,
        max_bytes=MAX_BYTES * len(units),
    )
    if isinstance(out, ProbeError):
        return dict.fromkeys(units, out)
    if out.returncode > 0 and not out.truncated:  # refused: the same for every unit
        return {unit: _answer(unit, out) for unit in units}
    now = now_mono()
    blocks = out.stdout.decode("utf-8", "replace").split("\n\n")
    if not _whole(out):
        blocks.pop()
    answers: dict[str, ServiceFacts | ProbeError] = {}
    for block in blocks:
        ident = next((line[3:] for line in block.splitlines() if line.startswith("Id=")), "")
        if ident in units and ident not in answers:
            answers[ident] = parse(ident, block, now)
    alone = [unit for unit in units if unit not in answers]
    states = await asyncio.gather(*(show(u, timeout=timeout) for u in alone))
    answers.update(zip(alone, states, strict=True))
    return answers


def _whole(out: Output) -> bool:
    """Not cut at the byte bound, nor of a systemctl killed part-way. An answer that is not
    whole is never parsed: its properties may stop anywhere (a state cut mid-word, NRestarts
    not yet said). Cut, its exit status is whatever the race with the kill left (0, -9, or
    asyncio's 255), so the cut is told by the bytes alone."""
    return not out.truncated and out.returncode >= 0


def _answer(unit: str, out: Output) -> ServiceFacts | ProbeError:
    if not _whole(out):
        how = (
            f"its answer passed {MAX_BYTES // 1024} KiB and was cut"
            if out.truncated
            else f"it was {ended(out.returncode)}"
        )
        return ProbeError(CODE, f"systemctl show {unit} did not answer completely: {how}.")
    if out.returncode != 0:
        # systemd's tools say what went wrong last, after any warning.
        why = out.stderr[-1] if out.stderr else ended(out.returncode)
        return ProbeError(CODE, f"systemctl show {unit} failed: {why}")
    return parse(unit, out.stdout.decode("utf-8", "replace"), now_mono())
