"""Apply end to end: a real room (Synapse, maubot with the built .mbp) talking to the helper
installed as docs/helper.md says, under a real systemd (systemd-nspawn) whose gmessages unit is
MDAD's own, its stand-in bridge starting only with the key that opens its store.

`!bridge apply gmessages`, confirmed: the crash loop ends and the follow-up says it is up;
config.yaml differs in that one value. The undo, confirmed: config.yaml is back byte for byte,
and the follow-up says it is failing again, with its fatal line and the finding that explains it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.chat import Chat, ask, build_plugin, deploy
from tests.e2e.conftest import e2e_workdir, maubot, synapse
from tests.e2e.sandbox import MatrixUser, Maubot, Synapse, is_notice, replies_to
from tests.support.nspawn import Machine
from tests.support.pg import PgServer

from .mdad_host import MdadHost, make_host
from .test_install import docs_install

pytestmark = pytest.mark.e2e

OLD = "go.mau.fi/mautrix-gmessages"  # the key its store opens with; MDAD renders another now
UNIT = "matrix-mautrix-gmessages.service"
FATAL = (
    'FTL Failed to start bridge error="failed to start Matrix connector: the supplied account '
    'key is invalid"'
)


@dataclass(frozen=True)
class Remote:
    """The helper as the plugin sees it: a socket and a token (what deploy() needs)."""

    socket_path: Path
    token: str


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Bound over /run/bridgedoctor inside; short, because a socket path fits in 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="bda-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def one_changed_line(before: bytes, after: bytes) -> tuple[bytes, bytes]:
    pairs = list(zip(before.splitlines(True), after.splitlines(True), strict=True))
    (changed,) = [(a, b) for a, b in pairs if a != b]
    return changed


async def confirm_and_follow(chat: Chat, plan: dict) -> tuple[dict, dict]:
    """The admin's ✅ on a plan; (the report, the follow-up), both replies to the plan."""
    replies = lambda e: is_notice(e) and replies_to(plan["event_id"])(e)  # noqa: E731
    async with MatrixUser(chat.synapse.url, chat.admin) as admin:
        await admin.react(chat.room_id, plan["event_id"], "✅")
        follow = await admin.wait_for_reply(
            chat.room_id,
            lambda e: replies(e) and e["content"]["body"][:1] in ("🟩", "🟥", "⬜"),
            sender=chat.bot.user_id,
            timeout=120,
        )
        report = await admin.wait_for_reply(
            chat.room_id,
            lambda e: replies(e) and e["content"]["body"].startswith("✅"),
            sender=chat.bot.user_id,
            timeout=5,
        )
    return report, follow


def test_apply_from_the_room_then_undo(
    nspawn: Callable[..., Machine],
    debian_venv: Path,
    mdad_pg: PgServer,
    tmp_path: Path,
    sock_dir: Path,
    synapse: Synapse,
    maubot: Maubot,
    e2e_workdir: Path,
) -> None:
    h: MdadHost = make_host(
        nspawn, tmp_path, debian_venv, mdad_pg, tag="apply", gmessages_key=OLD,
        binds={"/run/bridgedoctor": sock_dir},
    )  # fmt: skip
    m = h.m
    # MDAD's unit, but restarting after 1 s instead of 30; the stand-in starts only with the key
    # that opens its store, as the real bridge does. No start limit: at 30 s MDAD's loop never
    # reaches systemd's default (5 starts in 10 s), and a unit turning "failed" between the plan
    # and the confirmation would rightly refuse it (the plan said "restart", not "start").
    m.put(
        f"/etc/systemd/system/{UNIT}.d/fast.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestartSec=1\n",
    )
    m.systemctl("daemon-reload")
    m.standin(
        "matrix-mautrix-gmessages",
        ["INF gmessages stand-in bridge started"],
        needs={"file": "/config/config.yaml", "key": "pickle_key", "value": OLD,
               "lines": [FATAL], "exit": 1},
    )  # fmt: skip
    m.systemctl("restart", UNIT)
    m.wait_for(lambda: int(m.show(UNIT, "NRestarts")) >= 1, what="gmessages crash-looping")

    docs_install(m, "--allow-reset")
    # On an MDAD host maubot runs as the matrix user, which the installer admits; here the test's
    # maubot runs as root. Following takes 5 s instead of 30.
    m.sh(
        "sed -i 's/^allowed_uids: \\[991\\]$/allowed_uids: [991, 0]/' /etc/bridgedoctor/helper.yaml"
        " && echo 'verify_seconds: 5' >> /etc/bridgedoctor/helper.yaml"
    )
    m.systemctl("restart", "bridgedoctor-helper")
    h.wait_answering()
    token = m.run("cat", "/etc/bridgedoctor/token").stdout.strip()
    config = h.host.root / "mautrix-gmessages" / "config" / "config.yaml"
    before, st = config.read_bytes(), config.stat()

    mbp = build_plugin(e2e_workdir / "apply-dist")
    chat = asyncio.run(deploy(synapse, maubot, mbp, Remote(sock_dir / "helper.sock", token)))  # type: ignore[arg-type]

    async def conversation() -> None:
        command, plan = await ask(chat, chat.admin, "!bridge apply gmessages", timeout=120)
        body = plan["content"]["body"]
        assert body.startswith("⚠️ Write the proven key into the config.yaml of gmessages?")
        assert f'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "{OLD}"' in body
        ident = re.search(r"Undo: !bridge restore gmessages (\S+)", body)
        assert ident is not None
        report, follow = await confirm_and_follow(chat, plan)
        assert report["content"]["body"].startswith(
            f'✅ gmessages: config.yaml now holds the proven key "{OLD}"'
        )
        assert re.fullmatch(
            r"🟩 gmessages is up: running for \d+ s, no fatal line\.", follow["content"]["body"]
        ), follow["content"]["body"]

        after = config.read_bytes()
        assert one_changed_line(before, after) == (
            b"  pickle_key: mautrix.bridge.e2ee\n",
            f"  pickle_key: {OLD}\n".encode(),
        )
        now = config.stat()
        assert (now.st_uid, now.st_gid, now.st_mode) == (st.st_uid, st.st_gid, st.st_mode)
        assert m.show(UNIT, "SubState") == "running"

        _, rplan = await ask(chat, chat.admin, f"!bridge restore gmessages {ident.group(1)}")
        assert rplan["content"]["body"].startswith("⚠️ Restore gmessages from")
        report, follow = await confirm_and_follow(chat, rplan)
        assert report["content"]["body"].startswith(
            f"✅ gmessages: restored from {ident.group(1)}"
        )
        lines = follow["content"]["body"].splitlines()
        assert lines[0] == f"🟥 gmessages is still failing: {FATAL}", lines
        assert lines[1].startswith("🟥 Pickle key mismatch"), lines
        assert config.read_bytes() == before  # byte for byte

    asyncio.run(conversation())
