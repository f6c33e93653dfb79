"""Chaos trials for resets and restores: the real CLI killed from outside at every recorded step
and at random moments, reboots that start the enabled unit, backup disks that fill up at several
moments, stores of any size. Used by tests/test_reset_chaos.py (a bounded, seeded part) and by
scripts/chaos (the whole, with figures).

A World is one MDAD host with one bridge (PostgreSQL or SQLite), its store filled to `rows`
session rows, a stand-in bridge writing while its unit is active. Every trial starts from the
same state (`before`) and must end, after recovery (`bridgedoctor backups`, killed itself in some
trials), either untouched or fully reset with a backup that restores exactly; the unit as the
admin had it; no manifest unfinished and the lock free; no row the bridge wrote lost. A reset
outcome is then restored through the CLI, which brings the World back to `before` for the next
trial (and proves the backup restorable). Judged by tests/support/judge.py, never by the code
under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bulk import fill_pg, inbound_pool, inbound_rows, olm_pool, olm_rows
from bridgedoctor.probes.database import PgTarget, SqliteTarget
from bridgedoctor.reset import lock
from bridgedoctor.reset.engine import RESET_STEPS, RESTORE_STEPS
from bridgedoctor.reset.manifest import FINAL, Manifest, all_for
from bridgedoctor.reset.target import resolve

from . import disks, outside
from .judge import digests, standin_in_backups, standin_present
from .pg import PgServer
from .reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, options, standin_command, standin_rows

BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT
OPS = ("crypto", "full", "restore-crypto", "restore-full")
DISKS = ("ok", "full-at-start", "full-at-stop", "full-at-random")
# What a trial may end as, per operation (a restore's "before" is the reset state).
ALLOWED = {
    "crypto": {"untouched", "crypto reset"},
    "full": {"untouched", "full reset"},
    "restore-crypto": {"crypto reset", "untouched"},
    "restore-full": {"full reset", "untouched"},
}


def kill_points(op: str) -> list[str]:
    """Every moment the manifest records: its creation, then each step."""
    mode = op.removeprefix("restore-")
    steps = RESTORE_STEPS[mode] if op.startswith("restore") else RESET_STEPS[mode]
    return ["planned", *(f"step:{s}" for s in steps)]


@dataclass(frozen=True)
class Trial:
    op: str  # one of OPS
    kill: str  # "none", "planned", "step:<step>" or "random"
    reboot: bool = False
    active: bool = True  # the unit as the admin had it
    disk: str = "ok"  # one of DISKS
    kill_recovery: bool = False
    via: str = "cli"  # or "helper": the real helper process is killed, a new one recovers


@dataclass
class Result:
    trial: Trial
    outcome: str = ""  # "untouched", "crypto reset", "full reset" or "something else"
    killed_after: str = ""  # the last step on record when the kill came ("": before any)
    seconds: float = 0.0
    bridge_rows: int = 0  # rows the stand-in bridge wrote during the trial
    said: str = ""  # what an operation that ended by itself said last
    problems: list[str] = field(default_factory=list)


def data_digest(data_dir: Path, skip: Path | None) -> str:
    """The data directory by content, the SQLite store (which the bridge writes) left out."""
    h = hashlib.sha256()
    names = {skip.name + s for s in ("", "-wal", "-shm", "-journal")} if skip else set()
    for p in sorted(data_dir.rglob("*")) if data_dir.is_dir() else []:
        if p.parent == data_dir and p.name in names:
            continue
        h.update(str(p.relative_to(data_dir)).encode() + b"\0")
        if p.is_file() and not p.is_symlink():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def fill_store(target: PgTarget | SqliteTarget, rows: int) -> None:
    """Add `rows` session rows (half Megolm inbound, half Olm) of genuine pickles (bench/bulk)."""
    inbound, olm_n = rows // 2, rows - rows // 2
    key = "mautrix.bridge.e2ee"
    if isinstance(target, PgTarget):
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(
                user=target.user, password=target.password, host=target.host,
                port=target.port, database=target.database,
            )  # fmt: skip
            try:
                await fill_pg(conn, inbound, olm_n, key)
            finally:
                await conn.close()

        asyncio.run(go())
        return
    conn = sqlite3.connect(target.path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO crypto_megolm_inbound_session (account_id, session_id, sender_key, "
                "signing_key, room_id, session, forwarding_chains, withheld_code) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inbound_rows(inbound_pool(key), inbound),
            )
            conn.executemany(
                "INSERT INTO crypto_olm_session (account_id, session_id, sender_key, session) "
                "VALUES (?, ?, ?, ?)",
                (r[:4] for r in olm_rows(olm_pool(key, min(1000, max(olm_n, 1))), olm_n)),
            )
    finally:
        conn.close()


class HelperProc:
    """The real helper (`python -m bridgedoctor.helper`) as a process of its own session, its
    backups in one trial's directory; killed from outside like the CLI."""

    TOKEN = "chaos-token-0123456789abcdef"

    def __init__(self, world: World, backups: Path) -> None:
        self.world = world
        self.dir = Path(tempfile.mkdtemp(prefix="bdc-", dir="/tmp"))  # a short socket path
        token = self.dir / "token"
        token.write_text(self.TOKEN + "\n")
        token.chmod(0o600)
        host = world.host
        cfg = {
            "root": str(host.root), "systemd_dir": str(host.systemd),
            "db_host": f"{host.pg.host}:{host.pg.port}" if host.pg else None,
            "socket": str(self.dir / "h.sock"), "token_file": str(token),
            "backup_dir": str(backups), "allow_reset": True, "databases": dict(host.databases),
            "request_timeout": 3600,
        }  # fmt: skip
        self.config = self.dir / "helper.yaml"
        self.config.write_text(json.dumps(cfg))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it serves (it recovers what a crash left before that)."""
        self._spawn()
        outside.wait_until(self.serving, timeout=3600, every=0.05, what="the helper serving")

    def _spawn(self) -> None:
        with (self.dir / "helper.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridgedoctor.helper", "--config", str(self.config)],
                env=outside.cli_env(**self.world.env), stdout=log, stderr=log, cwd="/",
                start_new_session=True,
            )  # fmt: skip

    def start_killed_after(self, seconds: float) -> None:
        """Start it, and SIGKILL it `seconds` later, serving yet or not (recovery killed)."""
        self._spawn()
        time.sleep(seconds)
        self.kill()

    def serving(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            return bool(self.ask("list", timeout=5)["ok"])
        except (OSError, ValueError):
            return False

    def ask(self, op: str, timeout: float = 3600, **fields: Any) -> dict[str, Any]:
        line = json.dumps({"v": 1, "token": self.TOKEN, "op": op, **fields}).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.dir / "h.sock"))
            s.sendall(line)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data)

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        p = self.dir / "helper.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Op:
    """One reset or restore under way, through the CLI or the helper: ended by itself or not,
    killed from outside, and what it said."""

    def __init__(self, world: World, t: Trial, backups: Path) -> None:
        self.text = ""
        argv = world.op_argv(t.op, backups)
        self.helper: HelperProc | None = None
        if t.via == "cli":
            self.p = outside.spawn(*argv, *world.args(backups), **world.env)
            return
        self.helper = h = HelperProc(world, backups)
        h.start()
        if argv[0] == "restore":
            planned = h.ask("restore_plan", bridge=BRIDGE, backup=argv[2])
            body = {"op": "restore", "backup": argv[2]}
        else:
            planned = h.ask("reset_plan", bridge=BRIDGE, mode=argv[3])
            body = {"op": "reset", "mode": argv[3], "plan": planned.get("result", {}).get("id")}
        self.asking = threading.Thread(target=self._confirm, args=(body,))
        if not planned["ok"]:  # refused at the plan (a full disk): it ended there
            self.text = json.dumps(planned)
            return
        digest = planned["result"]["digest"]
        body |= {"bridge": BRIDGE, "digest": digest, "requested_by": "@admin:example.com"}
        self.asking.start()

    def _confirm(self, body: dict[str, Any]) -> None:
        assert self.helper is not None
        op = body.pop("op")
        try:
            self.text = json.dumps(self.helper.ask(op, **body))
        except (OSError, ValueError) as e:  # killed mid-answer
            self.text = str(e)

    def ended(self) -> bool:
        return self.p.poll() is not None if self.helper is None else not self.asking.is_alive()

    def kill(self) -> None:
        if self.helper is None:
            outside.kill_group(self.p)
        else:
            self.helper.kill()
            self.asking.join()

    def finish(self) -> None:
        """It ended by itself: collect what it said; a helper is stopped as systemd would."""
        if self.helper is None:
            out, err = self.p.communicate()
            self.text = out + err
        else:
            if self.asking.ident is not None:
                self.asking.join()
            self.helper.stop()

    def close(self) -> None:
        if self.helper is not None:
            self.helper.close()


class World:
    def __init__(self, tmp: Path, pg: PgServer | None, engine: str, rows: int, sd: Systemd):
        from tests.test_reset import deploy  # the reset tests' bridge, not a second one

        self.tmp, self.engine, self.rows, self.sd = tmp, engine, rows, sd
        self.host = deploy(tmp / "host", pg, engine)
        self.bridge = resolve(BRIDGE, options(self.host))
        fill_store(self.bridge.db, rows)
        self.log = tmp / "standin.log"
        sd.bridge = standin_command(self.host, BRIDGE, self.log)
        self.env = sd.env()
        self.count = 0
        self.disk_kib = 0  # free space the resets want (the disk trials' tmpfs size)
        self.seconds: dict[str, float] = {}  # op -> duration of an uninterrupted run
        self.states: dict[str, Any] = {}  # outcome -> state
        self.set_unit(True)
        self.before = self.look()
        self.states["untouched"] = self.before

    # -- the host ------------------------------------------------------------------------
    def systemctl(self, *argv: str) -> None:
        env = {**os.environ, **self.env}
        subprocess.run([str(self.sd.bin / "systemctl"), *argv], env=env, check=True)

    def set_unit(self, active: bool) -> None:
        self.systemctl("start" if active else "stop", UNIT)
        if active:  # running and writing (once a table is there to write to)
            n = len(standin_rows(self.log))
            with contextlib.suppress(AssertionError):
                outside.wait_until(lambda: len(standin_rows(self.log)) > n, timeout=1)

    def look(self) -> tuple[Any, str]:
        skip = self.bridge.db.path if isinstance(self.bridge.db, SqliteTarget) else None
        return digests(self.bridge.db), data_digest(self.bridge.data_dir, skip)

    def run(self, *argv: str, backups: Path, timeout: float = 3600) -> tuple[int, str]:
        return outside.run(*argv, *self.args(backups), timeout=timeout, **self.env)

    def args(self, backups: Path) -> list[str]:
        return [*self.host.args(), "--backup-dir", str(backups)]

    def op_argv(self, op: str, backups: Path) -> list[str]:
        if op.startswith("restore"):
            done = [
                m for m in all_for(backups / BRIDGE) if m.kind == "reset" and m.state == "done"
            ]
            return ["restore", BRIDGE, done[-1].id, "--yes"]
        return ["reset", BRIDGE, "--mode", op, "--yes"]

    # -- calibration: one clean run of each operation ---------------------------------------
    def calibrate(self) -> None:
        for mode in ("crypto", "full"):
            backups = self.tmp / f"calibrate-{mode}"
            t0 = time.monotonic()
            rc, text = self.run(*self.op_argv(mode, backups), backups=backups)
            self.seconds[mode] = time.monotonic() - t0
            assert rc == 0, text
            self.states[f"{mode} reset"] = self.look()
            t0 = time.monotonic()
            rc, text = self.run(*self.op_argv(f"restore-{mode}", backups), backups=backups)
            self.seconds[f"restore-{mode}"] = time.monotonic() - t0
            assert rc == 0, text
            assert self.look() == self.before, (
                f"a clean {mode} reset and restore changed the store"
            )
            shutil.rmtree(backups)
            self.disk_kib = max(self.disk_kib, self.space_wanted(mode))

    def outcome(self) -> str:
        now = self.look()
        return next((name for name, s in self.states.items() if s == now), "something else")

    # -- one trial --------------------------------------------------------------------------
    def trial(self, t: Trial, rng: random.Random) -> Result:
        self.count += 1
        r, t0 = Result(t), time.monotonic()
        backups = self.tmp / f"trial-{self.count}"
        bridge_dir = backups / BRIDGE
        self.set_unit(t.active)
        with contextlib.ExitStack() as stack:
            if t.disk != "ok":
                stack.enter_context(disks.tmpfs(backups, self.disk_size()))
            if t.op.startswith("restore"):
                rc, text = self.run("reset", BRIDGE, "--mode", t.op[8:], "--yes", backups=backups)
                assert rc == 0, text
                self.set_unit(t.active)
            n0 = len(standin_rows(self.log))
            filler = self.fill_moment(t, backups, rng)
            op = stack.enter_context(contextlib.closing(Op(self, t, backups)))
            killed = self.kill(op, t, bridge_dir, rng)
            if killed is None:
                op.finish()
                self.no_traceback(r, "the operation", op.text)
                r.said = op.text.strip().splitlines()[-1][:300] if op.text.strip() else ""
                r.killed_after = "(ran to its end)"
            else:
                r.killed_after = killed or "(before its manifest)"
            if t.reboot:
                self.sd.reboot([UNIT] if t.active else [])
                time.sleep(0.3)  # the bridge writes, if it can
            else:
                self.sd.settle_jobs()  # as systemd would, it finishes a job its client left
            if filler is not None:
                filler.join()
            if t.disk != "ok":  # still full: commands answer in sentences, then space is freed
                rc, text = self.run("backups", BRIDGE, backups=backups)
                self.no_traceback(r, "backups on a full disk", text)
                for f in backups.glob("filler*"):
                    f.unlink()
            self.recover(t, backups, rng, r)
            r.outcome = self.outcome()
            self.judge(r, bridge_dir, n0)
            if not r.problems:
                self.back_to_before(r, backups)
            r.bridge_rows = len(standin_rows(self.log)) - n0
        # A disk trial whose operation never reached the stop leaves its hook armed.
        (self.sd.state / f"{UNIT}.after-stop-once").unlink(missing_ok=True)
        if not r.problems:
            shutil.rmtree(backups, ignore_errors=True)
        r.seconds = time.monotonic() - t0
        return r

    def space_wanted(self, mode: str) -> int:
        """KiB the reset asks to have free before it starts, as it says when refusing."""
        probe = self.tmp / "space-probe"
        with disks.tmpfs(probe, "64k"):
            rc, text = self.run("reset", BRIDGE, "--mode", mode, "--yes", backups=probe)
        found = re.search(r"about (\d+) KiB needed", text)
        assert rc == 1 and found, text
        return int(found.group(1))

    def disk_size(self) -> str:
        """A tmpfs the reset's space check accepts, with a few MiB to spare."""
        return f"{self.disk_kib + 4096}k"

    def fill_moment(self, t: Trial, backups: Path, rng: random.Random) -> threading.Thread | None:
        """Another program takes every free byte of the backup disk: now, right after the
        unit's stop, or (a thread) at a random moment of the operation."""
        if t.disk == "full-at-start":
            disks.fill(backups, leave=rng.choice((0, 4096, 200_000)))
        elif t.disk == "full-at-stop":
            code = f"import sys; sys.path.insert(0, {str(Path(disks.__file__).parent)!r}); "
            code += f"import disks; disks.fill(__import__('pathlib').Path({str(backups)!r}))"
            self.sd.on_stop_once(UNIT, f"{sys.executable} -c {shlex.quote(code)}")
        elif t.disk == "full-at-random":
            delay = rng.uniform(0, self.seconds.get(t.op, 1.0))
            th = threading.Thread(target=lambda: (time.sleep(delay), disks.fill(backups)))
            th.start()
            return th
        return None

    def kill(self, op: Op, t: Trial, bridge_dir: Path, rng: random.Random) -> str | None:
        """SIGKILL the CLI's (or helper's) process group at the trial's moment. The last step on
        record then ("" before any manifest), or None if the operation had ended by itself."""
        kind = "restore" if t.op.startswith("restore") else "reset"

        def current() -> dict[str, Any] | None:
            ms = [m for m in outside.manifests(bridge_dir) if m["kind"] == kind]
            return ms[-1] if ms and not (kind == "reset" and t.op.startswith("restore")) else None

        if t.kill == "random":
            deadline = time.monotonic() + rng.uniform(0, 1.1 * self.seconds[t.op])
            while not op.ended() and time.monotonic() < deadline:
                time.sleep(0.002)
        elif t.kill != "none":
            want = t.kill.removeprefix("step:")

            def reached() -> bool:
                m = current()
                hit = m is not None and (want == "planned" or want in outside.steps(m))
                return hit or op.ended()

            outside.wait_until(reached, timeout=3600, every=0.002, what=t.kill)
        if t.kill == "none" or op.ended():
            return None
        m = current()
        op.kill()
        return (outside.steps(m) or ["planned"])[-1] if m else ""

    def recover(self, t: Trial, backups: Path, rng: random.Random, r: Result) -> None:
        """What brings the bridge back: `bridgedoctor backups`, or a helper starting."""
        if t.via == "helper":
            h = HelperProc(self, backups)
            try:
                if t.kill_recovery:
                    h.start_killed_after(rng.uniform(0, 1.5))
                    self.sd.settle_jobs()
                h.start()
                h.stop()
                if "Traceback" in h.log():
                    r.problems.append(f"the helper logged a traceback: {h.log()}")
            finally:
                h.close()
            return
        if t.kill_recovery:
            q = outside.spawn("backups", BRIDGE, *self.args(backups), **self.env)
            time.sleep(rng.uniform(0, 1.5))
            outside.kill_group(q)
            self.sd.settle_jobs()
        rc, text = self.run("backups", BRIDGE, backups=backups)
        if rc != 0:
            r.problems.append(f"backups after recovery: exit {rc}: {text.strip()[-400:]}")
        self.no_traceback(r, "recovery", text)

    # -- judging ----------------------------------------------------------------------------
    @staticmethod
    def no_traceback(r: Result, what: str, text: str) -> None:
        if "Traceback" in text:
            r.problems.append(f"{what} printed a traceback: {text.strip()[-600:]}")

    def judge(self, r: Result, bridge_dir: Path, n0: int) -> None:
        t = r.trial
        if r.outcome not in ALLOWED[t.op]:
            r.problems.append(f"ended as {r.outcome}, not one of {sorted(ALLOWED[t.op])}")
        ms = all_for(bridge_dir)
        open_ = [f"{m.id} {m.state}" for m in ms if m.state not in FINAL]
        if open_:
            r.problems.append(f"manifests left unfinished: {open_}")
        if lock.is_held(bridge_dir):
            r.problems.append("the lock is still held")
        unit = self.sd.get(UNIT)
        if unit != ("active" if t.active else "inactive"):
            r.problems.append(
                f"the unit is {unit}, the admin had it {'active' if t.active else 'inactive'}"
            )
        resets_done = any(m.kind == "reset" and m.state == "done" for m in ms)
        if r.outcome.endswith("reset") and not t.op.startswith("restore") and not resets_done:
            r.problems.append("reset outcome without a finished reset manifest")
        if not t.op.startswith("restore"):
            # A restore replaces the crypto store by decision; a reset must lose nothing.
            written = set(standin_rows(self.log)[n0:])
            lost = written - standin_present(self.bridge.db) - standin_in_backups(bridge_dir)
            if lost:
                r.problems.append(f"{len(lost)} rows the bridge wrote are lost")

    def back_to_before(self, r: Result, backups: Path) -> None:
        """A reset outcome is restored through the CLI: the backup must give `before` back."""
        if r.outcome == "untouched":
            return
        reset = [m for m in all_for(backups / BRIDGE) if m.kind == "reset" and m.state == "done"]
        m: Manifest = reset[-1]
        rc, text = self.run("restore", BRIDGE, m.id, "--yes", backups=backups)
        if rc != 0:
            r.problems.append(f"restoring the trial's backup failed: {text.strip()[-400:]}")
        elif self.look() != self.before:
            r.problems.append("the trial's backup did not restore the store exactly")


def plan(
    rng: random.Random, every_step: bool, random_trials: int, helper_steps: bool = False
) -> list[Trial]:
    """Every recorded step of every operation through the CLI (a reboot or not, at random), and
    with `helper_steps` through the helper too; a trial per disk-full moment; then random ones
    (random or step kills, reboots, full disks, admin-stopped units, recovery killed, a third
    through the helper)."""
    out: list[Trial] = []
    if every_step:
        for via in ("cli", "helper") if helper_steps else ("cli",):
            for op in OPS:
                for point in kill_points(op):
                    out.append(Trial(op, point, reboot=rng.random() < 0.5, via=via))
        for disk in DISKS[1:]:
            out.append(Trial(rng.choice(("crypto", "full")), "none", disk=disk))
    for _ in range(random_trials):
        op = rng.choice(OPS)
        out.append(
            Trial(
                op,
                rng.choice(["random", "random", *kill_points(op)]),
                reboot=rng.random() < 0.5,
                active=rng.random() < 0.8,
                disk=rng.choice(DISKS) if rng.random() < 0.3 else "ok",
                kill_recovery=rng.random() < 0.25,
                via="helper" if rng.random() < 0.33 else "cli",
            )
        )
    return out
