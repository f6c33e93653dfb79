"""A real systemd for tests: boot the host's own OS in a systemd-nspawn container.

Why: the helper's hardened unit, its reset drop-in, `systemctl stop/start` of bridge units, crash
loops under `Restart=always`, journald and reboots can only be trusted when real systemd runs
them. Only what cannot run here is replaced, at the process boundary: a fake `docker`
(tests/support/fake_docker, bound over /usr/local/bin inside) stands in for the Docker daemon and
the bridges themselves. See ../shared/knowledge/systemd-sandbox.md for the underlying recipe.

Use (the `nspawn` fixture in tests/conftest.py makes machines and always shuts them down):

    def test_crash_loop(nspawn):
        m = nspawn("crashloop")                                  # a name unique to this run
        m.bridge_unit("gmessages")                               # MDAD's exact unit (mdad.render_unit)
        m.standin("matrix-mautrix-gmessages", ["FTL boom"], exit_code=1)
        m.boot()
        m.systemctl("start", "matrix-mautrix-gmessages")
        m.wait_for(lambda: int(m.show("matrix-mautrix-gmessages", "NRestarts")) >= 1)
        assert "FTL boom" in m.journal("matrix-mautrix-gmessages")
        m.reboot()                                               # clean reboot; /run starts empty

What the container is:
- `--volatile=yes` over the host's `/`: a fresh tmpfs root with the host's `/usr` read-only, so
  Debian's own /usr/bin/python3 and systemd run inside. `/etc` is the host's seen through an
  overlay whose writes land in `<dir>/etc-upper` (kept across reboots, like a disk). `/run`,
  `/tmp`, `/var` and `/root` start empty at every boot, as after a real reboot; paths listed in
  `persist` are bound to host directories under `<dir>/persist/` and keep their content.
- Units that the host enables but a bridge host would not run (PostgreSQL's cluster, apt timers)
  are masked.
- The network is the host's (a PostgreSQL on 127.0.0.x is reachable inside).
- `binds` / `ro_binds` map container paths to host paths (e.g. `/matrix` to a test MDAD tree);
  `inaccessible` hides host directories inside under an empty tmpfs (e.g. /usr/lib/postgresql:
  a host without a PostgreSQL client).

Commands run inside with `nsenter` into the container's PID 1, with a clean environment
(`run`, `sh`, `systemctl`, `show`, `journal`). Files are written inside with `write` (through the
container, so the overlay stays consistent); `seed` writes into `/etc` before the first boot.

Lifecycle: `boot()` waits for `systemctl is-system-running --wait`; `reboot()` is
`systemctl reboot` inside and a new boot with the same disk; `power_cut()` kills the container's
PID 1 (no shutdown at all); `shutdown()` is a clean poweroff (SIGTERM to systemd-nspawn).

The fake docker: `standin(container, lines, exit_code)` sets what `docker start --attach` of that
container prints and how it ends (exit_code None: stays up until stopped). `fake_postgres(...)`
makes `docker exec matrix-postgres pg_dump|psql ...` run the host's real client against a test
server and `docker inspect matrix-postgres` report its address. `docker_calls()` lists every call.

`unavailable()` says why systemd-nspawn cannot run here (not root, not installed), or None. The
fixture skips with that reason, except when BRIDGEDOCTOR_REQUIRE_NSPAWN is set (scripts/test
sets it; scripts/setup.sh installs systemd-container), where it fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

FAKE_DOCKER = Path(__file__).with_name("fake_docker")
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host units that have no place on a bridge host, or would fail or wake up inside.
MASKED = (
    "postgresql.service",
    "postgresql@.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "console-getty.service",
)
BOOT_TIMEOUT = 90.0
# What MDAD's bridge units Require=; here they are stand-ins that just stay "active".
MDAD_DEPENDENCIES = (
    "docker.service",
    "matrix-synapse.service",
    "matrix-traefik.service",
    "matrix-postgres.service",
)
STUB_UNIT = """[Unit]
Description=stand-in for {unit} (tests/support/nspawn.py)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
"""


def require() -> None:
    """Skip (or, with BRIDGEDOCTOR_REQUIRE_NSPAWN, fail) when systemd-nspawn cannot run here."""
    import pytest

    reason = unavailable()
    if reason is not None:
        if os.environ.get("BRIDGEDOCTOR_REQUIRE_NSPAWN"):
            pytest.fail(reason + " (BRIDGEDOCTOR_REQUIRE_NSPAWN is set)", pytrace=False)
        pytest.skip(reason)


def unavailable() -> str | None:
    """Why systemd-nspawn cannot boot a container here, or None."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container util-linux)"
    if not Path("/usr/bin/python3").exists():
        return "/usr/bin/python3 (Debian's Python) is missing"
    return None


def unique_name(tag: str) -> str:
    """A machine name unique per run: bd-<tag>-<random>, at most 64 characters."""
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in tag.lower())[:40]
    return f"bd-{safe}-{secrets.token_hex(3)}"


def fake_postgres_conf(**conf: object) -> str:
    """The fake docker's matrix-postgres.json (see tests/support/fake_docker)."""
    return json.dumps({k: v for k, v in conf.items() if k != "self"})


class MachineError(AssertionError):
    """The container did not do what the test needed; carries the console tail."""


@dataclass
class Machine:
    dir: Path
    tag: str = "test"
    binds: Mapping[str, Path] = field(default_factory=dict)
    ro_binds: Mapping[str, Path] = field(default_factory=dict)
    persist: Iterable[str] = ()
    inaccessible: Iterable[str] = ()
    name: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    boots: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or unique_name(self.tag)
        self.etc_upper.mkdir(parents=True, exist_ok=True)
        self.fakebin.mkdir(parents=True, exist_ok=True)
        shutil.copy(FAKE_DOCKER, self.fakebin / "docker")
        os.chmod(self.fakebin / "docker", 0o755)
        self.persist = tuple(self.persist)
        for inside in self.persist:
            self.persist_dir(inside).mkdir(parents=True, exist_ok=True)
        units = self.etc_upper / "systemd" / "system"
        units.mkdir(parents=True, exist_ok=True)
        for unit in MASKED:
            link = units / unit
            if not link.is_symlink():
                link.symlink_to("/dev/null")

    # ---- paths on the host side -------------------------------------------------------------
    @property
    def etc_upper(self) -> Path:
        return self.dir / "etc-upper"

    @property
    def fakebin(self) -> Path:
        return self.dir / "fakebin"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    def persist_dir(self, inside: str) -> Path:
        return self.dir / "persist" / inside.strip("/").replace("/", "_")

    # ---- lifecycle ----------------------------------------------------------------------------
    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        if self.running:
            raise MachineError(f"{self.name} is already running")
        args = [
            "systemd-nspawn",
            "-D",
            "/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "-M",
            self.name,
            f"--overlay=/etc:{self.etc_upper}:/etc",
            f"--bind-ro={self.fakebin}:/usr/local/bin",
        ]
        args += [f"--bind={host}:{inside}" for inside, host in self.binds.items()]
        args += [f"--bind-ro={host}:{inside}" for inside, host in self.ro_binds.items()]
        args += [f"--bind={self.persist_dir(p)}:{p}" for p in self.persist]
        # An empty tmpfs over it: --inaccessible needs /run/systemd/inaccessible on the host.
        args += [f"--tmpfs={p}" for p in self.inaccessible]
        args += ["-b", "systemd.firstboot=off"]
        self.boots += 1
        with self.console_log.open("ab") as log:
            log.write(f"\n==== boot {self.boots}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/"
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise MachineError(
                    f"systemd-nspawn exited ({self.proc.returncode})" + self._tail()
                )
            leader = self._leader()
            if leader is not None:
                r = self._nsenter(
                    leader, ["systemctl", "is-system-running", "--wait"], timeout=timeout
                )
                if r.stdout.strip() in ("running", "degraded"):
                    return
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name} did not finish booting" + self._tail())
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, timeout: float = 60.0) -> None:
        """Clean poweroff: systemd-nspawn turns SIGTERM into an orderly shutdown."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self._wait_exit(timeout)

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """`systemctl reboot` inside (units stop in order), then boot again on the same disk."""
        self.run("systemctl", "reboot", check=False)
        self._wait_exit(timeout)
        self.boot(timeout)

    def power_cut(self) -> None:
        """The power goes: PID 1 dies without any shutdown, so every unit dies mid-step."""
        leader = self._leader()
        if leader is not None:
            os.kill(leader, signal.SIGKILL)
        self._wait_exit(30.0)

    def _wait_exit(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise MachineError(
                f"{self.name} did not stop within {timeout} s" + self._tail()
            ) from None

    def _leader(self) -> int | None:
        """The container's PID 1: systemd, a child of the systemd-nspawn process."""
        if self.proc is None:
            return None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return None

    def _tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- console tail ---\n" + "\n".join(text)

    # ---- commands inside ----------------------------------------------------------------------
    def _nsenter(
        self,
        leader: int,
        cmd: list[str],
        *,
        input: str | None = None,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        clean = {
            "PATH": INSIDE_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        argv = ["nsenter", "-t", str(leader), "-a", "env", "-i"]
        argv += [f"{k}={v}" for k, v in clean.items()] + cmd
        return subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, cwd="/"
        )

    def run(
        self,
        *cmd: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside as root; with check, a non-zero exit fails with its output."""
        leader = self._leader()
        if leader is None:
            raise MachineError(f"{self.name} is not running" + self._tail())
        r = self._nsenter(leader, list(cmd), input=input, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise MachineError(
                f"inside {self.name}: {' '.join(cmd)} exited {r.returncode}\n"
                f"stdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
            )
        return r

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, **kw)  # type: ignore[arg-type]

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create or replace a file inside (parents created), through the running container."""
        self.run("install", "-D", "-m", f"{mode:o}", "/dev/stdin", path, input=text)

    def seed(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file under /etc before boot (straight into the overlay's upper layer)."""
        if self.running:
            raise MachineError("seed() is for files written before boot; use write()")
        if not path.startswith("/etc/"):
            raise ValueError("seed() writes under /etc only")
        dest = self.etc_upper / path.removeprefix("/etc/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        os.chmod(dest, mode)

    def put(self, path: str, text: str, mode: int = 0o644) -> None:
        """`write` when running, `seed` before boot."""
        (self.write if self.running else self.seed)(path, text, mode)

    # ---- systemd ------------------------------------------------------------------------------
    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check)

    def show(self, unit: str, *props: str) -> str | dict[str, str]:
        """One property's value, or a dict of several."""
        r = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props))
        values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        return values.get(props[0], "") if len(props) == 1 else values

    def journal(self, unit: str, *extra: str) -> str:
        """The unit's journal, every line (`-a`: ANSI-coloured lines are text too)."""
        r = self.run("journalctl", "-u", unit, "-a", "--no-pager", "-o", "cat", *extra)
        return r.stdout

    def install_unit(self, name: str, text: str, dropins: Mapping[str, str] | None = None) -> None:
        """Put a unit (and drop-ins) in /etc/systemd/system; daemon-reload when running."""
        self.put(f"/etc/systemd/system/{name}", text)
        for dname, dtext in (dropins or {}).items():
            self.put(f"/etc/systemd/system/{name}.d/{dname}", dtext)
        if self.running:
            self.systemctl("daemon-reload")

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition"
    ) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def add_user(self, name: str, uid: int, gid: int) -> None:
        """A system user and its group, as MDAD creates `matrix`."""
        self.run("groupadd", "-g", str(gid), name)
        self.run(
            "useradd", "-u", str(uid), "-g", str(gid), "-M", "-r", "-s", "/usr/sbin/nologin", name
        )

    def bridge_unit(
        self, bridge: str, *, postgres: bool = True, dropins: Mapping[str, str] | None = None
    ) -> str:
        """Install matrix-mautrix-<bridge>.service exactly as MDAD renders it (tests/fixtures/
        mdad.py), plus stand-ins for the units it requires; returns the unit name."""
        from tests.fixtures import mdad

        for dep in MDAD_DEPENDENCIES:
            self.put(f"/etc/systemd/system/{dep}", STUB_UNIT.format(unit=dep))
        unit = f"matrix-mautrix-{bridge}.service"
        text = mdad.render_unit(bridge, image_tag=mdad.PINNED_TAGS[bridge], postgres=postgres)
        self.install_unit(unit, text, dropins)
        return unit

    # ---- the fake docker ----------------------------------------------------------------------
    def standin(
        self,
        container: str,
        lines: Iterable[str] = (),
        exit_code: int | None = None,
        needs: Mapping[str, object] | None = None,
    ) -> None:
        """What `docker start --attach <container>` prints, and its exit code (None: stays up).
        `needs` ({"file", "key", "value", "lines", "exit"}): unless the mounted file (a container
        path, e.g. /config/config.yaml) sets key to value, print `lines` and exit with `exit`
        instead, as a bridge that will not start with the wrong pickle key."""
        conf = {"lines": list(lines) or [f"{container} stand-in started"], "exit": exit_code}
        if needs is not None:
            conf["needs"] = dict(needs)
        self.put(f"/etc/fake-docker/{container}.json", json.dumps(conf))

    def fake_postgres(
        self, *, bindir: str, host: str, socket_dir: str, ip: str, port: int = 5432
    ) -> None:
        """`docker exec matrix-postgres <pg tool>` runs `bindir`'s tool against `host`:`port`
        (for `-h matrix-postgres -p 5432`) or `socket_dir` (no -h); `docker inspect` reports
        `ip`."""
        self.put("/etc/fake-docker/matrix-postgres.json", fake_postgres_conf(**locals()))

    def docker_calls(self) -> list[list[str]]:
        r = self.run("cat", "/run/fake-docker/calls.log", check=False)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
