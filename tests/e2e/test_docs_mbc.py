"""docs/plugin.md's `mbc login` command works against a real maubot (mbc appends
/_matrix/maubot/v1 to the server URL itself, so the URL is the server's root)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from .sandbox import Maubot

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugin.md"


def test_mbc_login_as_documented(maubot: Maubot, tmp_path: Path) -> None:
    m = re.search(r"mbc login -s (https://matrix\.<your domain>[^`\s]*)", DOCS.read_text())
    assert m is not None, "docs/plugin.md no longer shows mbc login"
    documented = m.group(1)
    # The docs' public URL, pointed at this maubot (served at its root, as MDAD's Traefik does).
    server = documented.replace("https://matrix.<your domain>", maubot.url)
    mbc = Path(sys.executable).with_name("mbc")
    r = subprocess.run(
        # -a: every option given, or mbc prompts (and aborts without a terminal).
        [
            str(mbc),
            "login",
            "-s",
            server,
            "-u",
            maubot.admin_user,
            "-p",
            maubot.admin_password,
            "-a",
            "bd",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=60,
        env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert "Logged in successfully" in r.stdout, r.stdout + r.stderr
    saved = json.loads((tmp_path / "maubot-cli.json").read_text())
    assert saved["servers"][server]
