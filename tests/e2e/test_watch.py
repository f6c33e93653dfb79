"""The watch end to end: real Synapse, a real maubot server restarted in the middle, the real
helper over PostgreSQL-backed bridges whose config.yaml the test breaks and fixes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd, fake_systemd

from .chat import Chat, Helper, ask, build_plugin, deploy, sample_fleet
from .sandbox import Event, MatrixUser, Maubot, Synapse, is_notice, replies_to

pytestmark = pytest.mark.e2e

INTERVAL = 2  # seconds between two looks; short to keep CI quick
GOOD_KEY = "  pickle_key: maunium.net/go/mautrix-whatsapp\n"
WRONG_KEY = "  pickle_key: mautrix.bridge.e2ee\n"


@pytest.fixture(scope="module")
def host(e2e_workdir: Path, pg: PgServer) -> Host:
    return sample_fleet(e2e_workdir / "watch-host", pg, f"watch{os.getpid()}_")


@pytest.fixture(scope="module")
def helper(e2e_workdir: Path, host: Host) -> Iterator[Helper]:
    (e2e_workdir / "watch-systemd").mkdir()
    systemd: Systemd = fake_systemd(e2e_workdir / "watch-systemd")
    systemd.set("matrix-mautrix-gmessages.service", "active")
    process = Helper(e2e_workdir / "watch-helper", host, systemd=systemd)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def chat(synapse: Synapse, maubot: Maubot, helper: Helper, e2e_workdir: Path) -> Chat:
    mbp = build_plugin(e2e_workdir / "watch-dist")
    watch = {"enabled": True, "interval": INTERVAL}
    return asyncio.run(deploy(synapse, maubot, mbp, helper, watch=watch))


async def watch_posts(chat: Chat, about: str) -> list[str]:
    """Bodies of the watch's messages naming `about`: notices replying to nothing."""
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        events = await user.recent_events(chat.room_id)
    return [
        e["content"]["body"]
        for e in events
        if e.get("sender") == chat.bot.user_id
        and is_notice(e)
        and "m.relates_to" not in e["content"]
        and about in e["content"]["body"]
    ]


async def wait_posts(chat: Chat, about: str, count: int, timeout: float = 40) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = await watch_posts(chat, about)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} watch posts about {about} expected, saw {found}")
        await asyncio.sleep(0.5)


def rounds(helper: Helper) -> int:
    """check_all requests the helper has answered (its audit lines)."""
    return helper.log_path.read_text().count("request op=check_all ")


def wait_rounds(helper: Helper, more: int, timeout: float = 60) -> None:
    start = rounds(helper)
    deadline = time.monotonic() + timeout
    while rounds(helper) < start + more:
        if time.monotonic() > deadline:
            raise AssertionError(f"the watch did not look {more} more times in {timeout} s")
        time.sleep(0.2)


def edit(path: Path, old: str, new: str) -> Callable[[], None]:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return lambda: path.write_text(text)


async def test_break_restart_fix(chat: Chat, maubot: Maubot, helper: Helper, host: Host) -> None:
    # gmessages is broken from the start: said once, when the watch first looks.
    (first,) = await wait_posts(chat, "gmessages", 1)
    assert first.startswith("🟥 gmessages: broken — Pickle key mismatch")

    config = host.root / "mautrix-whatsapp" / "config" / "config.yaml"
    fix = edit(config, GOOD_KEY, WRONG_KEY)
    (alert,) = await wait_posts(chat, "whatsapp", 1)
    assert alert.splitlines() == [
        '🟥 whatsapp: broken — Pickle key mismatch: the config has "mautrix.bridge.e2ee", but '
        'the crypto account was encrypted with "maunium.net/go/mautrix-whatsapp" (historical key '
        "of whatsapp). (was ok)",
        "Details: !bridge check whatsapp",
    ]
    await asyncio.to_thread(wait_rounds, helper, 3)  # still broken: nothing more is said
    assert len(await watch_posts(chat, "whatsapp")) == 1

    # A plan left waiting when maubot goes down is answered after it comes back.
    command, plan = await ask(chat, chat.admin, "!bridge reset gmessages")
    assert plan["content"]["body"].startswith("⚠️ Reset gmessages (crypto)?")
    maubot.restart()
    await asyncio.to_thread(wait_rounds, helper, 3)  # the restarted watch looked, three times
    assert len(await watch_posts(chat, "whatsapp")) == 1
    assert len(await watch_posts(chat, "gmessages")) == 1
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        cancelled: Event = await user.wait_for_reply(
            chat.room_id,
            lambda e: is_notice(e) and replies_to(plan["event_id"])(e),
            sender=chat.bot.user_id,
            timeout=30,
        )
    assert cancelled["content"]["body"] == (
        "The reset plan of gmessages was cancelled because the plugin restarted before it was "
        "confirmed; nothing was changed."
    )

    fix()
    posts = await wait_posts(chat, "whatsapp", 2)
    assert posts[1].startswith("🟩 whatsapp: healthy again — ")
    assert posts[1].splitlines()[0].endswith("(was broken)")
    await asyncio.to_thread(wait_rounds, helper, 2)
    assert len(await watch_posts(chat, "whatsapp")) == 2
    assert command
