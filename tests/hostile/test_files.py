"""Bridge-written files as weapons: links, FIFOs, devices, hard links, bombs, odd bytes. Each is
refused with one sentence as a finding, fast, and the helper keeps answering."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures import mdad
from tests.hostile.world import EVIL, SECRET, World


def only_finding(w: World) -> dict:
    started = time.monotonic()
    report = w.check()
    assert time.monotonic() - started < 20, "a refusal must not wait for a timeout"
    assert report["status"] in ("unknown", "broken"), report
    (finding,) = [f for f in report["findings"] if f["severity"] in ("unknown", "error")]
    summary = finding["summary"]
    assert summary.endswith(".") and "\n" not in summary and SECRET not in summary
    return finding


def test_config_linked_to_another_bridges_config(world: Callable[..., World]) -> None:
    """Its password is whatsapp's real one; following the link would use it."""
    w = world("postgres")
    w.attack(f"""
        import os
        os.unlink('config/config.yaml')
        os.symlink({str(w.config("whatsapp"))!r}, 'config/config.yaml')
    """)
    outside = w.outside()
    finding = only_finding(w)
    assert finding["code"] == "config_refused" and "is a symbolic link" in finding["summary"]
    assert not w.reset("full")["ok"]
    assert w.outside() == outside
    w.alive()


def test_config_directory_linked_elsewhere(world: Callable[..., World]) -> None:
    """The attacker cannot replace its mount point from inside the container, but the same uid
    on the host could: a config/ that is a link is refused as well."""
    w = world("postgres")
    w.attack(f"""
        import os
        os.rename('config', 'config.real')
        os.symlink({str(w.base("whatsapp") / "config")!r}, 'config')
    """)
    outside = w.outside()
    assert only_finding(w)["code"] == "config_refused"
    assert not w.reset("crypto")["ok"]
    assert w.outside() == outside
    w.alive()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "directory"])
def test_config_that_is_not_a_file(world: Callable[..., World], kind: str) -> None:
    """A FIFO would block a reading thread forever, /dev/zero would grow memory without end."""
    w = world("postgres")
    make = {
        "fifo": "os.mkfifo('config/config.yaml')",
        "dev-zero-link": "os.symlink('/dev/zero', 'config/config.yaml')",
        "directory": "os.mkdir('config/config.yaml')",
    }[kind]
    w.attack(f"import os\nos.unlink('config/config.yaml')\n{make}")
    for _ in range(40):  # more than any thread pool: nothing may be left blocked
        assert only_finding(w)["code"] == "config_refused"
    assert _rss_mib(w) < 400
    w.alive()
    assert w.stop(timeout=20) == 0  # and SIGTERM still ends it


def test_hard_link_to_a_root_only_file(world: Callable[..., World]) -> None:
    """On a host without fs.protected_hardlinks the attacker could link root's file into its
    config directory (made here by the test, as that kernel would let the attacker do)."""
    w = world("postgres")
    cfg = w.config()
    cfg.unlink()
    os.link(w.secrets / "service.yaml", cfg)
    finding = only_finding(w)
    assert finding["code"] == "config_refused" and "hard links" in finding["summary"]
    assert SECRET not in str(w.ask("check_all"))
    w.alive()


def test_file_owned_by_someone_else(world: Callable[..., World]) -> None:
    w = world("postgres")
    os.chown(w.config(), 12345, 12345)  # neither the bridge's owner nor root
    assert "owned by uid 12345" in only_finding(w)["summary"]
    w.alive()


@pytest.mark.parametrize(
    "name,text",
    [
        ("deep flow", "[" * 300_000 + "]" * 300_000),
        ("deep blocks", "- " * 300_000 + "x\n"),
        ("alias bomb", "\n".join(
            ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
            + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        )),
        ("too big", "database: {uri: x}\npad: " + "x" * (5 << 20) + "\n"),
        ("not utf-8", b"database:\n  uri: \xff\xfe\xfd\n"),
        ("many keys", "".join(f"k{i}: v\n" for i in range(60_000))),
    ],
)  # fmt: skip
def test_config_bombs(world: Callable[..., World], name: str, text: str | bytes) -> None:
    """Each kills, wedges or bloats a naive loader (the deep ones crash libyaml's recursive
    composer with SIGSEGV); here each is one finding and the helper lives on."""
    w = world("postgres")
    w.write_config(text)
    finding = only_finding(w)
    assert finding["code"] in ("config_refused", "config_unreadable")
    answer = w.ask("check_all")
    statuses = {r["bridge"]: r["status"] for r in answer["result"]["bridges"]}
    assert statuses == {"gmessages": "unknown", "signal": "ok", "whatsapp": "ok"}
    w.alive()


def test_huge_single_line_under_the_cap_is_just_data(world: Callable[..., World]) -> None:
    w = world("postgres")
    uri = mdad.mdad_db_uri(EVIL, password="x" * 900_000)
    w.write_config(mdad.render_config(EVIL, db_uri=uri))
    report = w.check()
    assert report["status"] in ("ok", "unknown"), report
    assert "x" * 1000 not in str(report)
    w.alive()


def test_sqlite_path_into_another_bridge_through_config(world: Callable[..., World]) -> None:
    w = world("sqlite")
    outside = w.outside()
    for uri in (
        "/config/../../mautrix-signal/data/mautrix-signal.db",
        "sqlite:////data/../../mautrix-signal/data/mautrix-signal.db",
    ):
        w.write_config(mdad.render_config(EVIL, db_uri=uri))
        finding = only_finding(w)
        assert (
            finding["code"] == "db_unsupported"
            and "leaves the bridge directory" in finding["summary"]
        )
        assert not w.reset("full")["ok"]
    # A link inside /config to signal's store: the path is the bridge's, the file is not.
    w.attack(f"import os; os.symlink({str(w.store('signal'))!r}, 'config/x.db')")
    w.write_config(mdad.render_config(EVIL, db_uri="/config/x.db"))
    finding = only_finding(w)
    assert finding["code"] == "db_refused" and "symbolic link" in finding["summary"]
    answer = w.reset("crypto")
    assert not answer["ok"] and "symbolic link" in answer["error"]["message"]
    assert w.outside() == outside
    w.alive()


def test_sqlite_store_that_is_a_fifo(world: Callable[..., World]) -> None:
    """An in-process open would block its thread for good; a plan's too."""
    w = world("sqlite")
    store = w.store().name
    w.attack(
        f"import os; os.rename('data/{store}', 'data/{store}.real'); os.mkfifo('data/{store}')"
    )
    for _ in range(10):
        assert "FIFO" in only_finding(w)["summary"]
    deep = w.ask("check", bridge=EVIL, deep=True)
    assert deep["ok"] and "FIFO" in str(deep["result"]), deep
    answer = w.ask("reset_plan", bridge=EVIL, mode="crypto")
    assert not answer["ok"] and "FIFO" in answer["error"]["message"]
    w.alive()
    assert w.stop(timeout=20) == 0


def test_sqlite_store_racing_a_fifo(world: Callable[..., World]) -> None:
    """The attacker swaps its store and a FIFO as fast as it can while checks run: whatever
    each check sees, it answers, and the helper answers everything else meanwhile."""
    w = world("sqlite")
    store = w.store().name
    racer = w.attack_in_background(f"""
        import os
        os.mkfifo('data/fifo')
        os.rename('data/{store}', 'data/real')
        while True:  # the store is the real file, then a FIFO, then the real file, ...
            os.rename('data/real', 'data/{store}')
            os.rename('data/{store}', 'data/real')
            os.rename('data/fifo', 'data/{store}')
            os.rename('data/{store}', 'data/fifo')
    """)
    seen = set()
    try:
        for _ in range(15):
            report = w.check()
            assert report["bridge"] == EVIL
            seen.add(report["findings"][-1]["code"])
            w.alive()
        assert racer.poll() is None, "the attacker stopped racing"
    finally:
        racer.kill()
        racer.wait()
    assert seen
    assert w.stop(timeout=30) == 0


def test_bad_port_does_not_hide_the_other_bridges(world: Callable[..., World]) -> None:
    w = world("postgres")
    w.write_config(mdad.render_config(EVIL, db_uri="postgres://u:p@matrix-postgres:99999/x"))
    answer = w.ask("check_all")
    assert answer["ok"], answer
    statuses = {r["bridge"]: r["status"] for r in answer["result"]["bridges"]}
    assert statuses == {"gmessages": "unknown", "signal": "ok", "whatsapp": "ok"}
    w.alive()


def _rss_mib(w: World) -> float:
    assert w.proc is not None
    for line in Path(f"/proc/{w.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_bridge_that_stalls_its_check_does_not_stall_the_others(
    world: Callable[..., World],
) -> None:
    """The attacker holds an exclusive lock on its own crypto table, so reading it waits; with a
    short request_timeout the fleet answer still comes in time, every other bridge checked."""
    import asyncio
    import threading

    import asyncpg

    w = world("postgres", start=False)
    w.start(request_timeout=8)
    locked = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        c = await asyncpg.connect(host=w.pg.socket_dir, port=w.pg.port,
                                  user=mdad.db_name(EVIL), database=mdad.db_name(EVIL))  # fmt: skip
        tx = c.transaction()
        await tx.start()
        await c.execute("LOCK TABLE crypto_account IN ACCESS EXCLUSIVE MODE")
        locked.set()
        while not release.is_set():
            await asyncio.sleep(0.1)
        await tx.rollback()
        await c.close()

    t = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    t.start()
    assert locked.wait(30)
    try:
        started = time.monotonic()
        answer = w.ask("check_all")
        assert answer["ok"], answer
        assert time.monotonic() - started < 8
        by_bridge = {r["bridge"]: r for r in answer["result"]["bridges"]}
        assert by_bridge["gmessages"]["findings"][0]["code"] == "check_timeout"
        assert {b: r["status"] for b, r in by_bridge.items()} == {
            "gmessages": "unknown", "signal": "ok", "whatsapp": "ok",
        }  # fmt: skip
    finally:
        release.set()
        t.join(30)
    w.alive()
