"""Matrix renderer on report dicts produced by the real core over MDAD-shaped hosts."""

from __future__ import annotations

import asyncio
import copy
import html
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.diagnose import Options, check, check_all
from bridgedoctor.render import common
from bridgedoctor.render import matrix as render
from tests.support.fleet import SECRETS, Host
from tests.support.pg import PgServer

GMESSAGES_SNIPPET = (
    'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
)
_counter = itertools.count()


@pytest.fixture
def host(tmp_path: Path, pg: PgServer) -> Host:
    prefix = f"rm{next(_counter)}_"
    h = Host.at(tmp_path, pg)
    h.add_broken_gmessages_healthy_whatsapp(prefix)
    return h


def opts(host: Host) -> Options:
    assert host.pg is not None
    return Options(root=host.root, systemd_dir=host.systemd, db_host=f"127.0.0.1:{host.pg.port}")


def report(host: Host, name: str) -> dict[str, Any]:
    return asyncio.run(check(name, opts(host))).to_dict()


def fleet(host: Host) -> dict[str, Any]:
    return asyncio.run(check_all(opts(host))).to_dict()


def code_blocks(formatted: str) -> list[str]:
    found = re.findall(r'<pre><code class="language-yaml">(.*?)</code></pre>', formatted, re.S)
    return [html.unescape(b).rstrip("\n") for b in found]


def assert_clean(plain: str, formatted: str) -> None:
    for secret in SECRETS:
        assert secret not in plain and secret not in formatted
    assert "<table" not in formatted
    assert not any(line.lstrip().startswith("|") for line in plain.splitlines())
    assert "Traceback" not in plain


def test_broken_bridge_verdict_evidence_snippet_command(host: Host) -> None:
    plain, formatted = render.bridge_report(report(host, "gmessages"))
    assert_clean(plain, formatted)
    # Verdict first, in both bodies.
    assert plain.startswith("🟥 gmessages: broken — Pickle key mismatch")
    assert formatted.startswith("<p>🟥 <b>gmessages</b>: broken — Pickle key mismatch")
    # Then the evidence, folded; then the snippet; then the command to run.
    details = formatted.index("<details><summary>Evidence</summary>")
    snippet = formatted.index('<pre><code class="language-yaml">')
    install = formatted.index("<code>just install-service mautrix-gmessages</code>")
    assert details < snippet < install
    assert formatted.count("<details>") == formatted.count("</details>") == 1
    assert "MAC mismatch" in formatted[details:snippet]
    assert code_blocks(formatted) == [GMESSAGES_SNIPPET]
    # Byte for byte in the HTML too (quotes are not entity-escaped outside attributes).
    assert GMESSAGES_SNIPPET in formatted
    assert f"```yaml\n{GMESSAGES_SNIPPET}\n```" in plain
    assert "just install-service mautrix-gmessages" in plain


class Poison:
    """Appends a distinct tag-like marker to every text it is given, and checks afterwards that
    each marker reached the HTML escaped (never as markup, never dropped)."""

    def __init__(self) -> None:
        self.markers: list[str] = []

    def __call__(self, text: object) -> str:
        marker = f"<i{len(self.markers)}>&"
        self.markers.append(marker)
        return f"{text}{marker}"

    def check(self, formatted: str, plain: str = "") -> None:
        assert "<i" not in formatted.replace("<i>", ""), "report text reached the HTML as markup"
        for marker in self.markers:
            escaped = html.escape(marker, quote=False)
            assert escaped in formatted or marker in code_blocks_raw(formatted), marker
            if plain:
                assert marker in plain, marker  # the plain body is plain text


def code_blocks_raw(formatted: str) -> str:
    return "\n".join(code_blocks(formatted))


def poisoned_report(r: dict[str, Any], poison: Poison) -> dict[str, Any]:
    """Every text of a report hostile: the name, each finding's summary, evidence and fix, the
    facts; plus findings of every severity, so that none is only ever the headline."""
    r = copy.deepcopy(r)
    r["bridge"] = poison(r["bridge"])
    extra = [
        {"code": "c_warning", "severity": "warning", "summary": "A warning.", "fix": None},
        {"code": "c_unknown", "severity": "unknown", "summary": "Unknown.", "fix": None},
        {"code": "c_info", "severity": "info", "summary": "Info.",
         "evidence": ["e"], "fix": {"vars_yml": "", "steps": ["just setup-all"], "variants": []}},
    ]  # fmt: skip
    for f in [*r["findings"], *extra]:
        f["summary"] = poison(f["summary"])
        f["evidence"] = [poison(e) for e in f.get("evidence") or []]
        if f.get("fix"):
            if f["fix"]["vars_yml"]:
                f["fix"]["vars_yml"] = poison(f["fix"]["vars_yml"])
            f["fix"]["steps"] = [poison(step) for step in f["fix"]["steps"]]
    r["findings"] += extra
    r["facts"] = {poison(k): poison(v) for k, v in r["facts"].items()}
    return r


def test_report_text_is_html_escaped(host: Host) -> None:
    r = report(host, "gmessages")
    _, formatted = render.bridge_report(r)
    # The real fix step names "<your matrix domain>": escaped, not swallowed as a tag.
    assert "inventory/host_vars/&lt;your matrix domain&gt;/vars.yml" in formatted
    assert "<your matrix domain>" not in formatted
    poison = Poison()
    plain, formatted = render.bridge_report(poisoned_report(r, poison))
    poison.check(formatted, plain)
    assert len(poison.markers) > 12


def test_fleet_and_list_escape_names_and_verdicts(host: Host) -> None:
    f = fleet(host)
    poison = Poison()
    f["bridges"] = [poisoned_report(r, poison) for r in f["bridges"]]
    _, formatted = render.fleet_report(f)
    assert "<i" not in formatted
    for r in f["bridges"]:
        name = html.escape(r["bridge"], quote=False)
        assert f"<b>{name}</b>" in formatted
        if r["status"] != "ok":
            assert f"<code>!bridge check {name}</code>" in formatted
    names = Poison()
    _, listed = render.bridge_list({"bridges": [names("gmessages"), {"bridge": names("x")}]})
    names.check(listed)


def test_reset_messages_escape_every_text() -> None:
    from bridgedoctor.render import matrix_reset as rr

    poison = Poison()
    plan = {k: poison(v) for k, v in {
        "bridge": "gmessages", "mode": "crypto", "unit": "u.service", "id": "20261126T070000Z-crypto",
        "backup_dir": "/b", "kept": "every bridge table",
    }.items()}  # fmt: skip
    plan.update(was_active=True, digest="0123456789abcdef",
                backed_up=[poison("t1")], removed=[poison("r1")], after=[poison("a1")])  # fmt: skip
    plain, formatted = rr.reset_plan(plan, "abcdef", 300)
    poison.check(formatted, plain)

    poison = Poison()
    rplan = {k: poison(v) for k, v in {
        "bridge": "gmessages", "backup": "20261126T070000Z-crypto", "unit": "u.service",
        "location": "/b", "backed_up_at": "2026", "put_back": "the rows", "lost": "keys",
    }.items()}  # fmt: skip
    poison.check(rr.restore_plan(rplan, "abcdef", 300)[1])

    poison = Poison()
    done = {k: poison(v) for k, v in {
        "bridge": "gmessages", "id": "20261126T070000Z-crypto", "mode": "crypto", "location": "/b",
    }.items()}  # fmt: skip
    done["after"] = [poison("a")]
    poison.check(rr.reset_done(done)[1])

    poison = Poison()
    poison.check(rr.restore_done({"bridge": poison("g"), "source": poison("s")})[1])

    poison = Poison()
    entry = {k: poison(v) for k, v in {
        "id": "i", "mode": "crypto", "state": "done", "requested_by": "@a:x", "location": "/b",
        "error": "e",
    }.items()}  # fmt: skip
    entry["steps"] = ["verify"]
    poison.check(rr.backups({"bridge": poison("g"), "backups": [entry]})[1])

    poison = Poison()
    poison.check(rr.ended(poison("the reset plan"), poison("g"), poison("expired"))[1])


def test_healthy_bridge_is_green(host: Host) -> None:
    plain, formatted = render.bridge_report(report(host, "whatsapp"))
    assert_clean(plain, formatted)
    assert plain.startswith("🟩 whatsapp: ok — The configured pickle key")
    assert "MAC verified" in plain.splitlines()[0]
    assert "<pre>" not in formatted  # nothing to fix


def test_unknown_bridge_could_not_check(host: Host) -> None:
    plain, formatted = render.bridge_report(report(host, "nope"))
    assert plain.startswith("⬜ nope: could not check — Unknown bridge 'nope'")
    assert "<details>" not in formatted


def test_fleet_one_line_per_bridge_and_pin(host: Host) -> None:
    f = fleet(host)
    plain, formatted = render.fleet_report(f)
    assert_clean(plain, formatted)
    lines = plain.splitlines()
    assert lines[0] == "🟥 2 bridges checked: 1 broken, 1 ok."
    assert lines[1].startswith("🟥 gmessages: broken — ")
    assert "supplied account key" not in lines[1]  # one sentence per bridge, as the terminal
    assert lines[2].startswith("🟩 whatsapp: ok — ")
    assert formatted.count("<li>🟥 <b>gmessages</b>") == 1
    assert formatted.count("<li>🟩 <b>whatsapp</b>") == 1
    (pin,) = code_blocks(formatted)
    assert GMESSAGES_SNIPPET in pin.splitlines()
    assert "whatsapp" not in pin  # MDAD's defaults render its key: nothing to pin
    assert "<code>just setup-all</code>" in formatted
    assert "Details and fixes: !bridge check gmessages" in plain
    assert "<code>!bridge check gmessages</code>" in formatted


def test_empty_fleet_and_list() -> None:
    assert render.fleet_report({"bridges": []})[0] == "No mautrix bridges found."
    assert render.bridge_list({"bridges": []})[0] == "No mautrix bridges found."
    plain, formatted = render.bridge_list({"bridges": ["gmessages", {"bridge": "whatsapp"}]})
    assert plain.splitlines()[:3] == ["Deployed bridges (2):", "- gmessages", "- whatsapp"]
    assert "<li>gmessages</li><li>whatsapp</li>" in formatted
    assert "!bridge check &lt;name&gt;" in formatted


def test_error_is_one_escaped_sentence() -> None:
    plain, formatted = render.error("Socket /run/x<y> is gone.")
    assert plain == "⚠️ Socket /run/x<y> is gone."
    assert formatted == "<p>⚠️ Socket /run/x&lt;y&gt; is gone.</p>"


def test_wording_matches_the_terminal_renderer(host: Host) -> None:
    assert render.STATUS_WORD == common.STATUS_WORD
    assert render.PIN_TITLE == common.PIN_TITLE
    for text in ("One. Two.", "One.", "No stop", "a.b. c"):
        assert render.first_sentence(text) == common.first_sentence(text)
    for name in ("gmessages", "whatsapp", "nope"):
        obj = asyncio.run(check(name, opts(host)))
        assert render.verdict(obj.to_dict()) == common.verdict(obj)


def test_oversized_evidence_keeps_the_fix(host: Host) -> None:
    r = report(host, "gmessages")
    r["findings"][0]["evidence"] = [f"candidate {i}: " + "x" * 200 for i in range(400)]
    plain, formatted = render.bridge_report(r)
    assert len(plain.encode()) + len(formatted.encode()) < 60_000
    assert "<details>" not in formatted
    assert "evidence is too long" in plain
    assert code_blocks(formatted) == [GMESSAGES_SNIPPET]


def test_lost_key_steps_name_the_room_commands(host: Host) -> None:
    """A lost key's way out, rendered for the room, names !bridge reset/restore, not the CLI."""
    import secrets as pysecrets

    from tests.support.store import StoreSpec

    lost = pysecrets.token_urlsafe(48)[:64]
    host.add("slack", StoreSpec("slack", account_key=lost), db_prefix=f"rm{next(_counter)}_")
    plain, formatted = render.bridge_report(report(host, "slack"))
    assert plain.startswith("🟥 slack: broken")
    assert "`!bridge reset slack`" in plain and "`!bridge restore slack <id>`" in plain
    assert "<code>!bridge reset slack</code>" in formatted
    assert "bridgedoctor reset" not in plain + formatted
    assert_clean(plain, formatted)
