"""Every message, byte for byte: the room's (plain body, HTML) pairs and the terminal's text,
for a complete answer and for one with its fields missing (an older helper may leave a field out:
the message still comes, with "?" where the renderer has a placeholder).

The expected text was read line by line when it was written down; a change to any message shows
here as a diff to read, which is the point: what the admin reads is the product."""
# ruff: noqa: E501 - whole messages are quoted

from __future__ import annotations

from typing import Any

import pytest

from bridgedoctor.findings import BridgeReport, Finding, Fix, FleetReport
from bridgedoctor.logs import LogsReport
from bridgedoctor.render import matrix, matrix_apply, matrix_reset, matrix_watch, text

KEY_FIX = {
    "vars_yml": 'matrix_mautrix_whatsapp_bridge_encryption_pickle_key: "k"',
    "steps": [
        "Add it, then: just install-service mautrix-whatsapp  (or: ansible-playbook setup.yml)",
        "Or reset: `bridgedoctor reset whatsapp` (undo: `bridgedoctor restore whatsapp <id>`)",
    ],
}
BROKEN = {
    "bridge": "whatsapp",
    "status": "broken",
    "facts": {"config": "/matrix/mautrix-whatsapp/config/config.yaml", "device": "DEV1"},
    "findings": [
        {
            "code": "x_warn",
            "severity": "warning",
            "summary": "A warning. Its second sentence.",
            "fix": {
                "vars_yml": "",
                "steps": [
                    "Run bridgedoctor check whatsapp --deep",
                    # Only backticked spans are room commands; the host command stays as it is.
                    "In the room `bridgedoctor check whatsapp`, on the host bridgedoctor check whatsapp --deep",
                ],
            },
        },
        {
            "code": "pickle_key_mismatch",
            "severity": "error",
            "summary": "Pickle key mismatch. The bridge fails. It says so.",
            "evidence": ["candidate a: MAC mismatch", "candidate b: opens"],
            "fix": KEY_FIX,
        },
        {
            "code": "service_crash_loop",
            "severity": "error",
            "summary": "Unit keeps restarting.",
            "explained_by": "pickle_key_mismatch",
            "fix": {"vars_yml": "", "steps": ["Read: bridgedoctor logs whatsapp"]},
        },
        {
            "code": "x_follows",
            "severity": "error",
            "summary": "It follows.",
            "explained_by": "pickle_key_mismatch",
            "evidence": ["seen"],
        },
        {"code": "x_odd", "severity": "novel", "summary": "Of a severity this plugin predates."},
        {
            "code": "x_info",
            "severity": "info",
            "summary": "For your information.",
            "fix": {"vars_yml": "", "steps": []},
        },
    ],
}
OK = {
    "bridge": "signal",
    "status": "ok",
    "findings": [
        {"code": "x_note", "severity": "info", "summary": "A note first."},
        {
            "code": "pickle_key_ok",
            "severity": "info",
            "summary": "The key opens it. MAC verified.",
        },
    ],
}
UNKNOWN = {
    "bridge": "slack",
    "status": "unknown",
    "findings": [{"code": "db_unreachable", "severity": "unknown", "summary": "No database."}],
}
WARNED = {
    "bridge": "discord",
    "status": "warning",
    "findings": [{"code": "x_warn", "severity": "warning", "summary": "Careful. Really."}],
}


CASES = {
    "bridge_report/broken": (matrix.bridge_report, (BROKEN,), {}),
    "bridge_report/other_command": (matrix.bridge_report, (BROKEN, "!bd"), {}),
    "bridge_report/ok_leads_with_the_key": (matrix.bridge_report, (OK,), {}),
    "bridge_report/status_out_of_step": (matrix.bridge_report, ({**OK, "status": "broken"},), {}),
    "bridge_report/empty": (matrix.bridge_report, ({},), {}),
    # A severity this plugin predates ranks as unknown: after an error, before a warning.
    "bridge_report/novel_severity_ranks_as_unknown": (
        matrix.bridge_report,
        (
            {
                "bridge": "x",
                "status": "broken",
                "findings": [
                    {"code": "w", "severity": "warning", "summary": "W."},
                    {"code": "n", "severity": "novel", "summary": "N."},
                    {"code": "e", "severity": "error", "summary": "E."},
                ],
            },
        ),
        {},
    ),
    "bridge_report/head_without_summary": (
        matrix.bridge_report,
        ({"bridge": "x", "status": "broken", "findings": [{"severity": "error"}]},),
        {},
    ),
    "bridge_report/head_without_summary_with_code": (
        matrix.bridge_report,
        (
            {
                "bridge": "x",
                "status": "broken",
                "findings": [
                    {"severity": "error", "code": "c"},
                    {"severity": "error", "code": "c", "summary": "no summary given (code c)."},
                    {"severity": "warning", "code": "d"},
                ],
            },
        ),
        {},
    ),
    "bridge_report/ok_without_key_finding": (
        matrix.bridge_report,
        (
            {
                "bridge": "x",
                "status": "ok",
                "findings": [{"severity": "info"}, {"severity": "info", "summary": "I."}],
            },
        ),
        {},
    ),
    "bridge_report/findings_without_code_or_summary": (
        matrix.bridge_report,
        (
            {
                "bridge": "x",
                "status": "broken",
                "findings": [
                    {"severity": "error", "summary": "S.", "evidence": ["e"]},
                    {"severity": "warning", "fix": {"vars_yml": "k: v", "steps": []}},
                ],
            },
        ),
        {},
    ),
    # The evidence gives way, never the fix.
    "bridge_report/too_long": (
        matrix.bridge_report,
        (
            {
                "bridge": "whatsapp",
                "status": "broken",
                "findings": [
                    {
                        "code": "c",
                        "severity": "error",
                        "summary": "S.",
                        "evidence": [f"candidate {i}: " + "x" * 200 for i in range(400)],
                        "fix": {"vars_yml": "k: v", "steps": ["just setup-all"]},
                    },
                    {"code": "d", "severity": "warning", "summary": "W."},
                ],
            },
        ),
        {},
    ),
    "bridge_report/strange_status": (
        matrix.bridge_report,
        ({"bridge": "x", "status": "on fire", "findings": ["junk"]},),
        {},
    ),
    "fleet_report/four": (
        matrix.fleet_report,
        (
            {
                "bridges": [OK, BROKEN, UNKNOWN, WARNED, "junk"],
                "pin": {
                    "vars_yml": "a: b",
                    "steps": ["just setup-all", "Then `bridgedoctor check all`"],
                },
            },
        ),
        {},
    ),
    "fleet_report/one_ok": (matrix.fleet_report, ({"bridges": [OK]}, "!bd"), {}),
    "fleet_report/two_ok": (matrix.fleet_report, ({"bridges": [OK, OK]},), {}),
    "bridge_list/shapes": (
        matrix.bridge_list,
        ({"bridges": [{"name": "n1"}, {"bridge": "b1", "name": "n2"}, {}, "s1"]}, "!bd"),
        {},
    ),
    "logs_report/two_lines_truncated": (
        matrix.logs_report,
        (
            {
                "bridge": "slack",
                "unit": "u.service",
                "state": "active (running)",
                "run": "previous run",
                "lines": ["ERR one", "FTL two"],
                "truncated": True,
            },
            "!bd",
        ),
        {},
    ),
    "logs_report/no_run_no_state": (
        matrix.logs_report,
        ({"bridge": "slack", "unit": "u.service", "lines": ["ERR one"]},),
        {},
    ),
    "logs_report/healthy_no_state": (
        matrix.logs_report,
        ({"bridge": "slack", "unit": "u.service"},),
        {},
    ),
    "logs_report/empty": (matrix.logs_report, ({},), {}),
    "error": (matrix.error, ("It broke.",), {}),
    "info": (matrix.info, ("Fine.",), {}),
    "usage/no_intro": (
        matrix.usage,
        ([("!bridge check NAME", "check one"), ("!bridge list", "list them")],),
        {},
    ),
    "usage/intro": (matrix.usage, ([("a", "b")], "Commands:"), {}),
    "reset_plan/full": (
        matrix_reset.reset_plan,
        (
            {
                "bridge": "whatsapp",
                "mode": "full",
                "unit": "u.service",
                "database": "postgres://h/db",
                "data_dir": "/matrix/w/data",
                "backed_up": ["t1", "t2"],
                "removed": ["r1", "r2"],
                "after": ["a1"],
                "kept": "nothing",
                "id": "ID1",
                "backup_dir": "/b/ID1",
                "was_active": True,
            },
            "abc234",
            90,
            "!bd",
        ),
        {},
    ),
    "reset_plan/empty": (matrix_reset.reset_plan, ({}, "abc234", 300), {}),
    "restore_plan/full": (
        matrix_reset.restore_plan,
        (
            {
                "bridge": "whatsapp",
                "unit": "u.service",
                "backup": "ID1",
                "put_back": "the crypto tables",
                "location": "/b/ID1",
                "backed_up_at": "2026-11-30 07:00",
                "lost": "keys made since",
                "mode": "crypto",
                "database": "postgres://h/db",
                "data_dir": "/matrix/w/data",
                "was_active": True,
            },
            "abc234",
            60,
            "!bd",
        ),
        {},
    ),
    "restore_plan/empty": (matrix_reset.restore_plan, ({}, "abc234", 300), {}),
    "reset_done/full": (
        matrix_reset.reset_done,
        (
            {
                "bridge": "whatsapp",
                "id": "ID1",
                "mode": "crypto",
                "location": "/b/ID1",
                "after": ["a1", "a2"],
            },
            "!bd",
        ),
        {},
    ),
    "reset_done/empty": (matrix_reset.reset_done, ({},), {}),
    "restore_done/full": (
        matrix_reset.restore_done,
        ({"bridge": "whatsapp", "source": "ID1"}, "!bd"),
        {},
    ),
    "restore_done/empty": (matrix_reset.restore_done, ({},), {}),
    "backups/restorable": (
        matrix_reset.backups,
        (
            {
                "bridge": "whatsapp",
                "backups": [
                    {
                        "id": "ID1",
                        "mode": "crypto",
                        "state": "done",
                        "requested_by": "@a:x",
                        "location": "/b/ID1",
                        "steps": ["stop", "backup", "verify", "remove"],
                    },
                    {
                        "id": "ID2",
                        "mode": "full",
                        "state": "failed",
                        "requested_by": "@a:x",
                        "location": "/b/ID2",
                        "steps": ["stop", "backup"],
                        "error": "disk full",
                    },
                    "junk",
                ],
            },
            "!bd",
        ),
        {},
    ),
    "backups/none_restorable": (
        matrix_reset.backups,
        (
            {
                "bridge": "whatsapp",
                "backups": [
                    {
                        "id": "ID2",
                        "mode": "full",
                        "state": "failed",
                        "requested_by": "@a:x",
                        "location": "/b/ID2",
                        "steps": ["stop", "backup"],
                    }
                ],
            },
        ),
        {},
    ),
    "backups/empty": (matrix_reset.backups, ({},), {}),
    "backups/fields_missing": (
        matrix_reset.backups,
        ({"bridge": "whatsapp", "backups": [{"id": "ID3", "mode": None}]},),
        {},
    ),
    "ended": (matrix_reset.ended, ("the reset plan", "whatsapp", "expired unconfirmed"), {}),
    "progress/rows_about": (
        matrix_reset.progress,
        (
            "reset",
            "whatsapp",
            {
                "index": 2,
                "steps": 5,
                "doing": "backing up",
                "step": "backup",
                "table": "crypto_olm_session",
                "rows": 1234,
                "of": 56789,
                "approx": True,
            },
        ),
        {},
    ),
    "progress/rows_exact_done": (
        matrix_reset.progress,
        (
            "restore",
            "whatsapp",
            {
                "index": 3,
                "steps": 4,
                "doing": "restoring",
                "step": "restore_db",
                "table": "t",
                "rows": 10,
                "of": 10,
            },
            "stopped",
        ),
        {},
    ),
    "progress/rows_no_total": (
        matrix_reset.progress,
        (
            "reset",
            "w",
            {
                "index": 2,
                "steps": 5,
                "doing": "d",
                "step": "backup",
                "table": "t",
                "rows": 5,
                "of": None,
            },
        ),
        {},
    ),
    "progress/other_step": (
        matrix_reset.progress,
        (
            "reset",
            "w",
            {
                "index": 4,
                "steps": 5,
                "doing": "removing",
                "step": "remove",
                "table": "t",
                "rows": 5,
            },
        ),
        {},
    ),
    "progress/no_rows": (
        matrix_reset.progress,
        ("reset", "w", {"step": "backup", "table": "t", "rows": None}),
        {},
    ),
    "progress/empty": (matrix_reset.progress, ("reset", "w", {}), {}),
    "apply_plan/full": (
        matrix_apply.apply_plan,
        (
            {
                "bridge": "whatsapp",
                "unit": "u.service",
                "config": "/c/config.yaml",
                "backup_dir": "/b/ID1",
                "key_from": '"old"',
                "key_to": '"new"',
                "origin": "MDAD default",
                "id": "ID1",
                "was_active": True,
                "vars_yml": "k: v",
                "pin_steps": ["Add it: just setup-all", "Then `bridgedoctor check whatsapp`"],
            },
            "abc234",
            120,
            "!bd",
        ),
        {},
    ),
    "apply_plan/empty": (matrix_apply.apply_plan, ({}, "abc234", 300), {}),
    "apply_done/full": (
        matrix_apply.apply_done,
        (
            {
                "bridge": "whatsapp",
                "id": "ID1",
                "key_to": '"new"',
                "unit": "u.service",
                "location": "/b/ID1",
                "vars_yml": "k: v",
                "pin_steps": ["just setup-all", "Then `bridgedoctor check whatsapp`"],
            },
            "!bd",
        ),
        {},
    ),
    "apply_done/empty": (matrix_apply.apply_done, ({},), {}),
    "apply_done/pin_without_steps": (
        matrix_apply.apply_done,
        (
            {
                "bridge": "w",
                "id": "ID1",
                "key_to": "k",
                "unit": "u",
                "location": "/b",
                "vars_yml": "k: v",
            },
        ),
        {},
    ),
    "verified/up": (
        matrix_apply.verified,
        ({"bridge": "whatsapp", "state": "up", "seconds": 12.5}, "!bd"),
        {},
    ),
    "verified/up_whole_seconds": (
        matrix_apply.verified,
        ({"bridge": "whatsapp", "state": "up", "seconds": 30.0},),
        {},
    ),
    "verified/up_no_seconds": (matrix_apply.verified, ({"state": "up"},), {}),
    "verified/up_odd_seconds": (matrix_apply.verified, ({"state": "up", "seconds": "many"},), {}),
    "verified/not_running": (
        matrix_apply.verified,
        ({"bridge": "whatsapp", "state": "stopped", "detail": "it is inactive"}, "!bd"),
        {},
    ),
    "verified/empty": (matrix_apply.verified, ({},), {}),
    "verified/failing": (
        matrix_apply.verified,
        (
            {
                "bridge": "whatsapp",
                "state": "failing",
                "fatal": "FTL key <invalid>",
                "finding": {"severity": "error", "summary": "Key mismatch."},
            },
            "!bd",
        ),
        {},
    ),
    "verified/failing_odd_finding": (
        matrix_apply.verified,
        ({"bridge": "w", "state": "failing", "finding": {"severity": "novel", "summary": "S."}},),
        {},
    ),
    "verified/failing_bare": (
        matrix_apply.verified,
        ({"state": "failing", "finding": {"severity": "error"}},),
        {},
    ),
    "changes/one": (matrix_watch.changes, ([(BROKEN, "ok")], "!bd"), {}),
    "changes/several": (
        matrix_watch.changes,
        ([(OK, "broken"), (UNKNOWN, "ok"), (WARNED, "new"), ({**OK, "bridge": "s2"}, "warning")],),
        {"helper_back": True},
    ),
    "changes/none_helper_back": (matrix_watch.changes, ([],), {"helper_back": True}),
    # ok after ok is no news of its own; "unknown" before is worded as the status line words it.
    "changes/ok_after_ok_and_unknown": (
        matrix_watch.changes,
        ([(OK, "ok"), ({**OK, "bridge": "s2"}, "unknown")],),
        {},
    ),
    "backups/restorable_default_command": (
        matrix_reset.backups,
        (
            {
                "bridge": "w",
                "backups": [
                    {
                        "id": "ID1",
                        "mode": "crypto",
                        "state": "done",
                        "requested_by": "@a:x",
                        "location": "/b/ID1",
                        "steps": ["verify"],
                    }
                ],
            },
        ),
        {},
    ),
    "changes/empty_report": (matrix_watch.changes, ([({}, "ok")],), {}),
    "helper_lost": (matrix_watch.helper_lost, ("The socket is gone.",), {}),
}


def _report() -> BridgeReport:
    fix = Fix(vars_yml="a: 1\nb: 2", steps=("First step " + "word " * 25, "Second."))
    return BridgeReport(
        "whatsapp",
        [
            Finding("x_warn", "warning", "A warning. More.", evidence=("e1", "e2 " + "w " * 60)),
            Finding(
                "pickle_key_mismatch", "error", "Mismatch. The bridge fails. It says so.", fix=fix
            ),
            Finding(
                "service_crash_loop",
                "error",
                "Loop.",
                fix=Fix("", ("restart",)),
                explained_by="pickle_key_mismatch",
            ),
            Finding("x_info", "info", "Info.", fix=Fix("", ())),
        ],
        {"config": "/c.yaml", "device id": "DEV"},
    )


TEXT = {
    "text.bridge": (text.bridge, (_report(),), {}),
    "text.bridge_ok": (
        text.bridge,
        (
            BridgeReport(
                "signal",
                [Finding("x", "info", "Note."), Finding("pickle_key_ok", "info", "Key ok. Yes.")],
            ),
        ),
        {},
    ),
    "text.fleet": (
        text.fleet,
        (
            FleetReport(
                [_report(), BridgeReport("signal-longer-name", [])],
                Fix("k: v", ("just setup-all",)),
            ),
        ),
        {},
    ),
    "text.fleet_ok": (text.fleet, (FleetReport([BridgeReport("a", [])]),), {}),
    "text.fleet_empty": (text.fleet, (FleetReport([]),), {}),
    "text.logs": (
        text.logs,
        (
            LogsReport(
                "slack",
                "u.service",
                "active (running)",
                "previous run",
                ["ERR one", "FTL two"],
                truncated=True,
            ),
        ),
        {},
    ),
    "text.logs_fine": (
        text.logs,
        (LogsReport("slack", "u.service", "active (running)", "current run"),),
        {},
    ),
    "text.logs_problem": (text.logs, (LogsReport("slack", problem="No journal."),), {}),
}


EXPECTED: dict[str, Any] = {
    "bridge_report/broken": (
        '🟥 whatsapp: broken — Pickle key mismatch. The bridge fails. It says so.\n↳ It follows.\n⬜ Of a severity this plugin predates.\n🟨 A warning. Its second sentence.\nℹ️ For your information.\n\nEvidence (pickle_key_mismatch):\n  - candidate a: MAC mismatch\n  - candidate b: opens\nEvidence (x_follows):\n  - seen\nFacts:\n  - config: /matrix/mautrix-whatsapp/config/config.yaml\n  - device: DEV1\n\nFix:\n```yaml\nmatrix_mautrix_whatsapp_bridge_encryption_pickle_key: "k"\n```\n1. Add it, then: just install-service mautrix-whatsapp  (or: ansible-playbook setup.yml)\n2. Or reset: `!bridge reset whatsapp` (undo: `!bridge restore whatsapp <id>`)\n\nFix:\n1. Run bridgedoctor check whatsapp --deep\n2. In the room `!bridge check whatsapp`, on the host bridgedoctor check whatsapp --deep',
        '<p>🟥 <b>whatsapp</b>: broken — Pickle key mismatch. The bridge fails. It says so.</p><ul><li>↳ It follows.</li><li>⬜ Of a severity this plugin predates.</li><li>🟨 A warning. Its second sentence.</li><li>ℹ️ For your information.</li></ul><details><summary>Evidence</summary><p><b>pickle_key_mismatch</b></p><ul><li>candidate a: MAC mismatch</li><li>candidate b: opens</li></ul><p><b>x_follows</b></p><ul><li>seen</li></ul><p><b>Facts</b></p><ul><li><b>config</b>: /matrix/mautrix-whatsapp/config/config.yaml</li><li><b>device</b>: DEV1</li></ul></details><p><b>Fix:</b></p><pre><code class="language-yaml">matrix_mautrix_whatsapp_bridge_encryption_pickle_key: "k"\n</code></pre><ol><li>Add it, then: <code>just install-service mautrix-whatsapp</code>  (or: <code>ansible-playbook setup.yml</code>)</li><li>Or reset: <code>!bridge reset whatsapp</code> (undo: <code>!bridge restore whatsapp &lt;id&gt;</code>)</li></ol><p><b>Fix:</b></p><ol><li>Run <code>bridgedoctor check whatsapp --deep</code></li><li>In the room <code>!bridge check whatsapp</code>, on the host <code>bridgedoctor check whatsapp --deep</code></li></ol>',
    ),
    "bridge_report/other_command": (
        '🟥 whatsapp: broken — Pickle key mismatch. The bridge fails. It says so.\n↳ It follows.\n⬜ Of a severity this plugin predates.\n🟨 A warning. Its second sentence.\nℹ️ For your information.\n\nEvidence (pickle_key_mismatch):\n  - candidate a: MAC mismatch\n  - candidate b: opens\nEvidence (x_follows):\n  - seen\nFacts:\n  - config: /matrix/mautrix-whatsapp/config/config.yaml\n  - device: DEV1\n\nFix:\n```yaml\nmatrix_mautrix_whatsapp_bridge_encryption_pickle_key: "k"\n```\n1. Add it, then: just install-service mautrix-whatsapp  (or: ansible-playbook setup.yml)\n2. Or reset: `!bd reset whatsapp` (undo: `!bd restore whatsapp <id>`)\n\nFix:\n1. Run bridgedoctor check whatsapp --deep\n2. In the room `!bd check whatsapp`, on the host bridgedoctor check whatsapp --deep',
        '<p>🟥 <b>whatsapp</b>: broken — Pickle key mismatch. The bridge fails. It says so.</p><ul><li>↳ It follows.</li><li>⬜ Of a severity this plugin predates.</li><li>🟨 A warning. Its second sentence.</li><li>ℹ️ For your information.</li></ul><details><summary>Evidence</summary><p><b>pickle_key_mismatch</b></p><ul><li>candidate a: MAC mismatch</li><li>candidate b: opens</li></ul><p><b>x_follows</b></p><ul><li>seen</li></ul><p><b>Facts</b></p><ul><li><b>config</b>: /matrix/mautrix-whatsapp/config/config.yaml</li><li><b>device</b>: DEV1</li></ul></details><p><b>Fix:</b></p><pre><code class="language-yaml">matrix_mautrix_whatsapp_bridge_encryption_pickle_key: "k"\n</code></pre><ol><li>Add it, then: <code>just install-service mautrix-whatsapp</code>  (or: <code>ansible-playbook setup.yml</code>)</li><li>Or reset: <code>!bd reset whatsapp</code> (undo: <code>!bd restore whatsapp &lt;id&gt;</code>)</li></ol><p><b>Fix:</b></p><ol><li>Run <code>bridgedoctor check whatsapp --deep</code></li><li>In the room <code>!bd check whatsapp</code>, on the host <code>bridgedoctor check whatsapp --deep</code></li></ol>',
    ),
    "bridge_report/ok_leads_with_the_key": (
        "🟩 signal: ok — The key opens it. MAC verified.\nℹ️ A note first.",
        "<p>🟩 <b>signal</b>: ok — The key opens it. MAC verified.</p><ul><li>ℹ️ A note first.</li></ul>",
    ),
    "bridge_report/status_out_of_step": (
        "🟥 signal: broken — A note first.\nℹ️ The key opens it. MAC verified.",
        "<p>🟥 <b>signal</b>: broken — A note first.</p><ul><li>ℹ️ The key opens it. MAC verified.</li></ul>",
    ),
    "bridge_report/empty": (
        "⬜ ?: could not check — no problem found.",
        "<p>⬜ <b>?</b>: could not check — no problem found.</p>",
    ),
    "bridge_report/novel_severity_ranks_as_unknown": (
        "🟥 x: broken — E.\n⬜ N.\n🟨 W.",
        "<p>🟥 <b>x</b>: broken — E.</p><ul><li>⬜ N.</li><li>🟨 W.</li></ul>",
    ),
    "bridge_report/head_without_summary": (
        "🟥 x: broken — no summary given.",
        "<p>🟥 <b>x</b>: broken — no summary given.</p>",
    ),
    "bridge_report/head_without_summary_with_code": (
        "🟥 x: broken — no summary given (code c).\n🟨 no summary given (code d).",
        "<p>🟥 <b>x</b>: broken — no summary given (code c).</p><ul><li>🟨 no summary given (code d).</li></ul>",
    ),
    "bridge_report/ok_without_key_finding": (
        "🟩 x: ok — no summary given.\nℹ️ I.",
        "<p>🟩 <b>x</b>: ok — no summary given.</p><ul><li>ℹ️ I.</li></ul>",
    ),
    "bridge_report/findings_without_code_or_summary": (
        "🟥 x: broken — S.\n🟨 no summary given.\n\nEvidence (?):\n  - e\n\nFix:\n```yaml\nk: v\n```",
        '<p>🟥 <b>x</b>: broken — S.</p><ul><li>🟨 no summary given.</li></ul><details><summary>Evidence</summary><p><b>?</b></p><ul><li>e</li></ul></details><p><b>Fix:</b></p><pre><code class="language-yaml">k: v\n</code></pre>',
    ),
    "bridge_report/too_long": (
        "🟥 whatsapp: broken — S.\n🟨 W.\n\nThe evidence is too long for one message; run bridgedoctor check whatsapp on the host.\n\nFix:\n```yaml\nk: v\n```\n1. just setup-all",
        '<p>🟥 <b>whatsapp</b>: broken — S.</p><ul><li>🟨 W.</li></ul><p>The evidence is too long for one message; run bridgedoctor check whatsapp on the host.</p><p><b>Fix:</b></p><pre><code class="language-yaml">k: v\n</code></pre><ol><li><code>just setup-all</code></li></ol>',
    ),
    "bridge_report/strange_status": (
        "⬜ x: could not check — no problem found.",
        "<p>⬜ <b>x</b>: could not check — no problem found.</p>",
    ),
    "fleet_report/four": (
        "🟥 4 bridges checked: 1 broken, 1 could not check, 1 warning, 1 ok.\n🟩 signal: ok — The key opens it.\n🟥 whatsapp: broken — Pickle key mismatch.\n⬜ slack: could not check — No database.\n🟨 discord: warning — Careful.\n\nPin these keys in vars.yml before the next playbook run:\n```yaml\na: b\n```\n1. just setup-all\n2. Then `!bridge check all`\n\nDetails and fixes: !bridge check whatsapp | !bridge check slack | !bridge check discord",
        '<p>🟥 4 bridges checked: 1 broken, 1 could not check, 1 warning, 1 ok.</p><ul><li>🟩 <b>signal</b>: ok — The key opens it.</li><li>🟥 <b>whatsapp</b>: broken — Pickle key mismatch.</li><li>⬜ <b>slack</b>: could not check — No database.</li><li>🟨 <b>discord</b>: warning — Careful.</li></ul><p><b>Pin these keys in vars.yml before the next playbook run:</b></p><pre><code class="language-yaml">a: b\n</code></pre><ol><li><code>just setup-all</code></li><li>Then <code>!bridge check all</code></li></ol><p>Details and fixes: <code>!bridge check whatsapp</code> | <code>!bridge check slack</code> | <code>!bridge check discord</code></p>',
    ),
    "fleet_report/one_ok": (
        "🟩 1 bridge checked: 1 ok.\n🟩 signal: ok — The key opens it.",
        "<p>🟩 1 bridge checked: 1 ok.</p><ul><li>🟩 <b>signal</b>: ok — The key opens it.</li></ul>",
    ),
    "fleet_report/two_ok": (
        "🟩 2 bridges checked: 2 ok.\n🟩 signal: ok — The key opens it.\n🟩 signal: ok — The key opens it.",
        "<p>🟩 2 bridges checked: 2 ok.</p><ul><li>🟩 <b>signal</b>: ok — The key opens it.</li><li>🟩 <b>signal</b>: ok — The key opens it.</li></ul>",
    ),
    "bridge_list/shapes": (
        "Deployed bridges (4):\n- n1\n- b1\n- ?\n- s1\nCheck one with !bd check <name>, or all with !bd check all.",
        "<p>Deployed bridges (4):</p><ul><li>n1</li><li>b1</li><li>?</li><li>s1</li></ul><p>Check one with <code>!bd check &lt;name&gt;</code>, or all with <code>!bd check all</code>.</p>",
    ),
    "logs_report/two_lines_truncated": (
        "🟥 slack: last fatal and error lines of its previous run (u.service: active (running)):\n```text\nERR one\nFTL two\n```\nOlder lines of this run are left out.\nDiagnosis and fix: !bd check slack",
        '<p>🟥 slack: last fatal and error lines of its previous run (u.service: active (running)):</p><pre><code class="language-text">ERR one\nFTL two\n</code></pre><p>Older lines of this run are left out.</p><p>Diagnosis and fix: <code>!bd check slack</code></p>',
    ),
    "logs_report/no_run_no_state": (
        "🟥 slack: last fatal and error lines of its current run (u.service):\n```text\nERR one\n```\nDiagnosis and fix: !bridge check slack",
        '<p>🟥 slack: last fatal and error lines of its current run (u.service):</p><pre><code class="language-text">ERR one\n</code></pre><p>Diagnosis and fix: <code>!bridge check slack</code></p>',
    ),
    "logs_report/healthy_no_state": (
        "🟩 slack: no fatal or error line since it last started (u.service).",
        "<p>🟩 slack: no fatal or error line since it last started (u.service).</p>",
    ),
    "logs_report/empty": (
        "🟩 ?: no fatal or error line since it last started ().",
        "<p>🟩 ?: no fatal or error line since it last started ().</p>",
    ),
    "error": ("⚠️ It broke.", "<p>⚠️ It broke.</p>"),
    "info": ("Fine.", "<p>Fine.</p>"),
    "usage/no_intro": (
        "- !bridge check NAME — check one\n- !bridge list — list them",
        "<ul><li><code>!bridge check NAME</code> — check one</li><li><code>!bridge list</code> — list them</li></ul>",
    ),
    "usage/intro": ("Commands:\n- a — b", "<p>Commands:</p><ul><li><code>a</code> — b</li></ul>"),
    "reset_plan/full": (
        "⚠️ Reset whatsapp (full)? Nothing happens until you confirm.\nDatabase: postgres://h/db\nData directory: /matrix/w/data (emptied)\n1. stop u.service and check it is inactive\n2. back up to /b/ID1 and verify the backup (row counts, sha256) before anything is removed\n3. remove: r1; r2\n4. start u.service\nBacked up:\n   - t1\n   - t2\nKept: nothing\nAfterwards:\n   - a1\nUndo: !bd restore whatsapp ID1\nConfirm within 90 seconds: react ✅ to this message, or send !bd confirm abc234. ❌ cancels. Only you can confirm.",
        "<p><b>⚠️ Reset whatsapp (full)? Nothing happens until you confirm.</b></p><p>Database: <code>postgres://h/db</code><br>Data directory: <code>/matrix/w/data</code> (emptied)</p><ol><li>stop u.service and check it is inactive</li><li>back up to /b/ID1 and verify the backup (row counts, sha256) before anything is removed</li><li>remove: r1; r2</li><li>start u.service</li></ol><details><summary>Backed up (2)</summary><ul><li>t1</li><li>t2</li></ul><p>Kept: nothing</p></details><p>Afterwards:</p><ul><li>a1</li></ul><p>Undo: <code>!bd restore whatsapp ID1</code></p><p><b>Confirm within 90 seconds</b>: react ✅ to this message, or send <code>!bd confirm abc234</code>. ❌ cancels. Only you can confirm.</p>",
    ),
    "reset_plan/empty": (
        "⚠️ Reset ? (?)? Nothing happens until you confirm.\nDatabase: ?\nData directory: ? (not emptied)\n1. stop ? and check it is inactive\n2. back up to ? and verify the backup (row counts, sha256) before anything is removed\n3. remove: \n4. leave stopped (it is not running now): ?\nBacked up:\nKept: \nAfterwards:\nUndo: !bridge restore ? ?\nConfirm within 5 minutes: react ✅ to this message, or send !bridge confirm abc234. ❌ cancels. Only you can confirm.",
        "<p><b>⚠️ Reset ? (?)? Nothing happens until you confirm.</b></p><p>Database: <code>?</code><br>Data directory: <code>?</code> (not emptied)</p><ol><li>stop ? and check it is inactive</li><li>back up to ? and verify the backup (row counts, sha256) before anything is removed</li><li>remove: </li><li>leave stopped (it is not running now): ?</li></ol><details><summary>Backed up (0)</summary><ul></ul><p>Kept: </p></details><p>Afterwards:</p><ul></ul><p>Undo: <code>!bridge restore ? ?</code></p><p><b>Confirm within 5 minutes</b>: react ✅ to this message, or send <code>!bridge confirm abc234</code>. ❌ cancels. Only you can confirm.</p>",
    ),
    "restore_plan/full": (
        "⚠️ Restore whatsapp from ID1? Nothing happens until you confirm.\nDatabase: postgres://h/db\nData directory: /matrix/w/data (not touched)\n1. stop u.service and check it is inactive\n2. put back the crypto tables from /b/ID1 (backed up 2026-11-30 07:00) and check it matches the backup\n3. start it\nLost: keys made since.\nConfirm within 1 minute: react ✅ to this message, or send !bd confirm abc234. ❌ cancels. Only you can confirm.",
        "<p><b>⚠️ Restore whatsapp from ID1? Nothing happens until you confirm.</b></p><p>Database: <code>postgres://h/db</code><br>Data directory: <code>/matrix/w/data</code> (not touched)</p><ol><li>stop u.service and check it is inactive</li><li>put back the crypto tables from /b/ID1 (backed up 2026-11-30 07:00) and check it matches the backup</li><li>start it</li></ol><p>Lost: keys made since.</p><p><b>Confirm within 1 minute</b>: react ✅ to this message, or send <code>!bd confirm abc234</code>. ❌ cancels. Only you can confirm.</p>",
    ),
    "restore_plan/empty": (
        "⚠️ Restore ? from ?? Nothing happens until you confirm.\nDatabase: ?\nData directory: ? (replaced by the backup's)\n1. stop ? and check it is inactive\n2. put back ? from ? (backed up ?) and check it matches the backup\n3. leave it stopped (it is not running now)\nLost: .\nConfirm within 5 minutes: react ✅ to this message, or send !bridge confirm abc234. ❌ cancels. Only you can confirm.",
        "<p><b>⚠️ Restore ? from ?? Nothing happens until you confirm.</b></p><p>Database: <code>?</code><br>Data directory: <code>?</code> (replaced by the backup's)</p><ol><li>stop ? and check it is inactive</li><li>put back ? from ? (backed up ?) and check it matches the backup</li><li>leave it stopped (it is not running now)</li></ol><p>Lost: .</p><p><b>Confirm within 5 minutes</b>: react ✅ to this message, or send <code>!bridge confirm abc234</code>. ❌ cancels. Only you can confirm.</p>",
    ),
    "reset_done/full": (
        "✅ whatsapp: crypto reset done.\nBackup ID1, verified, in /b/ID1.\nNow:\n   - a1\n   - a2\nUndo: !bd restore whatsapp ID1",
        "<p><b>✅ whatsapp: crypto reset done.</b> Backup ID1, verified, in /b/ID1.</p><p>Now:</p><ul><li>a1</li><li>a2</li></ul><p>Undo: <code>!bd restore whatsapp ID1</code></p>",
    ),
    "reset_done/empty": (
        "✅ ?: ? reset done.\nBackup ?, verified, in ?.\nNow:\nUndo: !bridge restore ? ?",
        "<p><b>✅ ?: ? reset done.</b> Backup ?, verified, in ?.</p><p>Now:</p><ul></ul><p>Undo: <code>!bridge restore ? ?</code></p>",
    ),
    "restore_done/full": (
        "✅ whatsapp: restored from ID1. Check it with !bd check whatsapp.",
        "<p><b>✅ whatsapp: restored from ID1.</b> Check it with <code>!bd check whatsapp</code>.</p>",
    ),
    "restore_done/empty": (
        "✅ ?: restored from ?. Check it with !bridge check ?.",
        "<p><b>✅ ?: restored from ?.</b> Check it with <code>!bridge check ?</code>.</p>",
    ),
    "backups/restorable": (
        "Reset backups of whatsapp (2):\n- ID1 — crypto, done, by @a:x, in /b/ID1\n- ID2 — full, failed, by @a:x, in /b/ID2 (disk full)\nPut one back with !bd restore whatsapp <id>.",
        "<p>Reset backups of <b>whatsapp</b> (2):</p><ul><li>ID1 — crypto, done, by @a:x, in /b/ID1</li><li>ID2 — full, failed, by @a:x, in /b/ID2 (disk full)</li></ul><p>Put one back with !bd restore whatsapp &lt;id&gt;.</p>",
    ),
    "backups/none_restorable": (
        "Reset backups of whatsapp (1):\n- ID2 — full, failed, by @a:x, in /b/ID2\nNone of them completed a verified backup, so none can be restored.",
        "<p>Reset backups of <b>whatsapp</b> (1):</p><ul><li>ID2 — full, failed, by @a:x, in /b/ID2</li></ul><p>None of them completed a verified backup, so none can be restored.</p>",
    ),
    "backups/fields_missing": (
        "Reset backups of whatsapp (1):\n- ID3 — ?, ?, by ?, in ?\nNone of them completed a verified backup, so none can be restored.",
        "<p>Reset backups of <b>whatsapp</b> (1):</p><ul><li>ID3 — ?, ?, by ?, in ?</li></ul><p>None of them completed a verified backup, so none can be restored.</p>",
    ),
    "backups/empty": (
        "No reset backups of ? on this host.",
        "<p>No reset backups of ? on this host.</p>",
    ),
    "ended": (
        "The reset plan of whatsapp expired unconfirmed; nothing was changed.",
        "<p>The reset plan of whatsapp expired unconfirmed; nothing was changed.</p>",
    ),
    "progress/rows_about": (
        "⏳ Reset of whatsapp, step 2 of 5: backing up, crypto_olm_session: 1,234 of about 56,789 rows",
        "<p>⏳ Reset of whatsapp, step 2 of 5: backing up, crypto_olm_session: 1,234 of about 56,789 rows</p>",
    ),
    "progress/rows_exact_done": (
        "✔️ Restore of whatsapp, step 3 of 4: restoring, t: 10 of 10 rows (stopped)",
        "<p>✔️ Restore of whatsapp, step 3 of 4: restoring, t: 10 of 10 rows (stopped)</p>",
    ),
    "progress/rows_no_total": (
        "⏳ Reset of w, step 2 of 5: d, t: 5 rows",
        "<p>⏳ Reset of w, step 2 of 5: d, t: 5 rows</p>",
    ),
    "progress/other_step": (
        "⏳ Reset of w, step 4 of 5: removing",
        "<p>⏳ Reset of w, step 4 of 5: removing</p>",
    ),
    "progress/no_rows": ("⏳ Reset of w, step ? of ?: …", "<p>⏳ Reset of w, step ? of ?: …</p>"),
    "progress/empty": ("⏳ Reset of w, step ? of ?: …", "<p>⏳ Reset of w, step ? of ?: …</p>"),
    "apply_plan/full": (
        '⚠️ Write the proven key into the config.yaml of whatsapp? Nothing happens until you confirm.\nMake it last: pin the key in vars.yml (the next playbook run renders config.yaml again):\n```yaml\nk: v\n```\n1. Add it: just setup-all\n2. Then `!bd check whatsapp`\nThen, now:\n1. back up /c/config.yaml to /b/ID1 and verify the copy\n2. change encryption.pickle_key from "old" to "new" (MDAD default); nothing else in the file changes\n3. restart u.service and follow it, then say how it runs\nUndo: !bd restore whatsapp ID1\nConfirm within 2 minutes: react ✅ to this message, or send !bd confirm abc234. ❌ cancels. Only you can confirm.',
        '<p><b>⚠️ Write the proven key into the config.yaml of whatsapp? Nothing happens until you confirm.</b></p><p><b>Make it last: pin the key in vars.yml (the next playbook run renders config.yaml again):</b></p><pre><code class="language-yaml">k: v\n</code></pre><ol><li>Add it: <code>just setup-all</code></li><li>Then <code>!bd check whatsapp</code></li></ol><p>Then, now:</p><ol><li>back up /c/config.yaml to /b/ID1 and verify the copy</li><li>change encryption.pickle_key from "old" to "new" (MDAD default); nothing else in the file changes</li><li>restart u.service and follow it, then say how it runs</li></ol><p>Undo: <code>!bd restore whatsapp ID1</code></p><p><b>Confirm within 2 minutes</b>: react ✅ to this message, or send <code>!bd confirm abc234</code>. ❌ cancels. Only you can confirm.</p>',
    ),
    "apply_plan/empty": (
        "⚠️ Write the proven key into the config.yaml of ?? Nothing happens until you confirm.\nThen, now:\n1. back up ? to ? and verify the copy\n2. change encryption.pickle_key from ? to ? (?); nothing else in the file changes\n3. start (it is not running now) ? and follow it, then say how it runs\nUndo: !bridge restore ? ?\nConfirm within 5 minutes: react ✅ to this message, or send !bridge confirm abc234. ❌ cancels. Only you can confirm.",
        "<p><b>⚠️ Write the proven key into the config.yaml of ?? Nothing happens until you confirm.</b></p><p>Then, now:</p><ol><li>back up ? to ? and verify the copy</li><li>change encryption.pickle_key from ? to ? (?); nothing else in the file changes</li><li>start (it is not running now) ? and follow it, then say how it runs</li></ol><p>Undo: <code>!bridge restore ? ?</code></p><p><b>Confirm within 5 minutes</b>: react ✅ to this message, or send <code>!bridge confirm abc234</code>. ❌ cancels. Only you can confirm.</p>",
    ),
    "apply_done/full": (
        '✅ whatsapp: config.yaml now holds the proven key "new"; u.service restarted. Following it now.\nMake it last: pin the key in vars.yml (the next playbook run renders config.yaml again):\n```yaml\nk: v\n```\n1. just setup-all\n2. Then `!bd check whatsapp`\nBackup ID1 in /b/ID1.\nUndo: !bd restore whatsapp ID1',
        '<p><b>✅ whatsapp: config.yaml now holds the proven key "new"; u.service restarted. Following it now.</b></p><p><b>Make it last: pin the key in vars.yml (the next playbook run renders config.yaml again):</b></p><pre><code class="language-yaml">k: v\n</code></pre><ol><li><code>just setup-all</code></li><li>Then <code>!bd check whatsapp</code></li></ol><p>Backup ID1 in /b/ID1. Undo: <code>!bd restore whatsapp ID1</code></p>',
    ),
    "apply_done/empty": (
        "✅ ?: config.yaml now holds the proven key ?; ? restarted. Following it now.\nBackup ? in ?.\nUndo: !bridge restore ? ?",
        "<p><b>✅ ?: config.yaml now holds the proven key ?; ? restarted. Following it now.</b></p><p>Backup ? in ?. Undo: <code>!bridge restore ? ?</code></p>",
    ),
    "apply_done/pin_without_steps": (
        "✅ w: config.yaml now holds the proven key k; u restarted. Following it now.\nMake it last: pin the key in vars.yml (the next playbook run renders config.yaml again):\n```yaml\nk: v\n```\nBackup ID1 in /b.\nUndo: !bridge restore w ID1",
        '<p><b>✅ w: config.yaml now holds the proven key k; u restarted. Following it now.</b></p><p><b>Make it last: pin the key in vars.yml (the next playbook run renders config.yaml again):</b></p><pre><code class="language-yaml">k: v\n</code></pre><p>Backup ID1 in /b. Undo: <code>!bridge restore w ID1</code></p>',
    ),
    "verified/up": (
        "🟩 whatsapp is up: running for 12.5 s, no fatal line.",
        "<p>🟩 whatsapp is up: running for 12.5 s, no fatal line.</p>",
    ),
    "verified/up_whole_seconds": (
        "🟩 whatsapp is up: running for 30 s, no fatal line.",
        "<p>🟩 whatsapp is up: running for 30 s, no fatal line.</p>",
    ),
    "verified/up_no_seconds": (
        "🟩 ? is up: running for 0 s, no fatal line.",
        "<p>🟩 ? is up: running for 0 s, no fatal line.</p>",
    ),
    "verified/up_odd_seconds": (
        "🟩 ? is up: running for many s, no fatal line.",
        "<p>🟩 ? is up: running for many s, no fatal line.</p>",
    ),
    "verified/not_running": (
        "⬜ whatsapp is not running after the change: it is inactive. Details: !bd check whatsapp",
        "<p>⬜ whatsapp is not running after the change: it is inactive. Details: <code>!bd check whatsapp</code></p>",
    ),
    "verified/empty": (
        "⬜ ? is not running after the change: it is not running. Details: !bridge check ?",
        "<p>⬜ ? is not running after the change: it is not running. Details: <code>!bridge check ?</code></p>",
    ),
    "verified/failing": (
        "🟥 whatsapp is still failing: FTL key <invalid>\n🟥 Key mismatch.\nDetails and the fix: !bd check whatsapp",
        "<p>🟥 <b>whatsapp</b> is still failing: <code>FTL key &lt;invalid&gt;</code></p><p>🟥 Key mismatch.</p><p>Details and the fix: <code>!bd check whatsapp</code></p>",
    ),
    "verified/failing_odd_finding": (
        "🟥 w is still failing: no fatal line in its journal\n⬜ S.\nDetails and the fix: !bridge check w",
        "<p>🟥 <b>w</b> is still failing: <code>no fatal line in its journal</code></p><p>⬜ S.</p><p>Details and the fix: <code>!bridge check w</code></p>",
    ),
    "verified/failing_bare": (
        "🟥 ? is still failing: no fatal line in its journal\nDetails and the fix: !bridge check ?",
        "<p>🟥 <b>?</b> is still failing: <code>no fatal line in its journal</code></p><p>Details and the fix: <code>!bridge check ?</code></p>",
    ),
    "changes/one": (
        "🟥 whatsapp: broken — Pickle key mismatch. (was ok)\nDetails: !bd check whatsapp",
        "<p>🟥 <b>whatsapp</b>: broken — Pickle key mismatch. (was ok)</p><p>Details: <code>!bd check whatsapp</code></p>",
    ),
    "changes/several": (
        "The bridgedoctor helper answers again.\n⬜ 4 bridges changed: 2 healthy again, 1 could not check, 1 warning.\n🟩 signal: healthy again — The key opens it. (was broken)\n⬜ slack: could not check — No database. (was ok)\n🟨 discord: warning — Careful. (was new)\n🟩 s2: healthy again — The key opens it. (was warning)\nDetails: !bridge check signal | !bridge check slack | !bridge check discord | !bridge check s2",
        "<p>The bridgedoctor helper answers again.</p><p>⬜ 4 bridges changed: 2 healthy again, 1 could not check, 1 warning.</p><ul><li>🟩 <b>signal</b>: healthy again — The key opens it. (was broken)</li><li>⬜ <b>slack</b>: could not check — No database. (was ok)</li><li>🟨 <b>discord</b>: warning — Careful. (was new)</li><li>🟩 <b>s2</b>: healthy again — The key opens it. (was warning)</li></ul><p>Details: <code>!bridge check signal</code> | <code>!bridge check slack</code> | <code>!bridge check discord</code> | <code>!bridge check s2</code></p>",
    ),
    "changes/none_helper_back": (
        "The bridgedoctor helper answers again.",
        "<p>The bridgedoctor helper answers again.</p>",
    ),
    "changes/ok_after_ok_and_unknown": (
        "🟩 2 bridges changed: 1 ok, 1 healthy again.\n🟩 signal: ok — The key opens it. (was ok)\n🟩 s2: healthy again — The key opens it. (was could not check)\nDetails: !bridge check signal | !bridge check s2",
        "<p>🟩 2 bridges changed: 1 ok, 1 healthy again.</p><ul><li>🟩 <b>signal</b>: ok — The key opens it. (was ok)</li><li>🟩 <b>s2</b>: healthy again — The key opens it. (was could not check)</li></ul><p>Details: <code>!bridge check signal</code> | <code>!bridge check s2</code></p>",
    ),
    "backups/restorable_default_command": (
        "Reset backups of w (1):\n- ID1 — crypto, done, by @a:x, in /b/ID1\nPut one back with !bridge restore w <id>.",
        "<p>Reset backups of <b>w</b> (1):</p><ul><li>ID1 — crypto, done, by @a:x, in /b/ID1</li></ul><p>Put one back with !bridge restore w &lt;id&gt;.</p>",
    ),
    "changes/empty_report": (
        "⬜ ?: could not check — no problem found. (was ok)\nDetails: !bridge check ?",
        "<p>⬜ <b>?</b>: could not check — no problem found. (was ok)</p><p>Details: <code>!bridge check ?</code></p>",
    ),
    "helper_lost": (
        "⬜ The watch could not check the bridges: The socket is gone. I will say when it works again.",
        "<p>⬜ The watch could not check the bridges: The socket is gone. I will say when it works again.</p>",
    ),
    "text.bridge": "whatsapp: BROKEN - Mismatch. The bridge fails. It says so.\n  Facts\n    config     /c.yaml\n    device id  DEV\n  [error] pickle_key_mismatch\n    Mismatch. The bridge fails. It says so.\n    Fix:\n      vars.yml:\n          a: 1\n          b: 2\n      1. First step word word word word word word word word word word word word word word word word\n      word word word word word word word word word\n      2. Second.\n  [error] service_crash_loop (explained by pickle_key_mismatch)\n    Loop.\n  [warning] x_warn\n    A warning. More.\n    Evidence:\n      e1\n      e2 w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w\n      w w w w w w w w w w w w w w\n  [info] x_info\n    Info.",
    "text.bridge_ok": "signal: OK - Key ok. Yes.\n  [info] x\n    Note.\n  [info] pickle_key_ok\n    Key ok. Yes.",
    "text.fleet": "whatsapp            broken           Mismatch.\nsignal-longer-name  ok               no problem found.\n\nPin these keys in vars.yml before the next playbook run:\n  vars.yml:\n      k: v\n  1. just setup-all\n\nDetails and fixes: bridgedoctor check whatsapp",
    "text.fleet_ok": "a  ok               no problem found.",
    "text.fleet_empty": "No mautrix bridges found.",
    "text.logs": "slack: last fatal and error lines of its previous run (u.service: active (running))\n  ERR one\n  FTL two\n  (older lines of this run are left out)\nDiagnosis and fix: bridgedoctor check slack",
    "text.logs_fine": "slack: no fatal or error line since it last started (u.service: active (running)).",
    "text.logs_problem": "slack: No journal.",
}


@pytest.mark.parametrize("name", sorted({**CASES, **TEXT}))
def test_message(name: str) -> None:
    render, args, kwargs = {**CASES, **TEXT}[name]
    assert render(*args, **kwargs) == EXPECTED[name]


def _block(plain: str) -> list[str]:
    """The log lines inside the plain body's code block."""
    inside = plain.split("```text\n", 1)[1].split("\n```", 1)[0]
    return inside.splitlines()


@pytest.mark.parametrize(
    ("count", "size", "kept"),
    [
        (7, 10_000, 2),  # the newest lines that fit, one dropped at a time
        (3, 20_000, 1),  # only the newest fits
        (2, 60_000, 1),  # not even the newest fits: it is sent anyway, never dropped
    ],
)
def test_logs_keep_the_newest_lines_that_fit(count: int, size: int, kept: int) -> None:
    lines = [f"ERR line {i} " + "x" * size for i in range(count)]
    plain, _ = matrix.logs_report({"bridge": "slack", "unit": "u.service", "lines": lines})
    assert _block(plain) == lines[-kept:]
    assert "Older lines are left out to fit one message." in plain


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (90, "90 seconds"),
        (60, "1 minute"),
        (300, "5 minutes"),
        (3600, "60 minutes"),
    ],
)
def test_durations(seconds: int, words: str) -> None:
    assert matrix_reset.duration(seconds) == words


def test_a_message_of_exactly_the_largest_size_keeps_its_evidence() -> None:
    """Each evidence character counts twice (plain and HTML), a '<' five times (&lt;): some mix
    makes the message exactly MAX_CONTENT_BYTES, which still fits; one byte more does not."""

    def message(n: int, k: int) -> tuple[str, str]:
        finding = {"code": "c", "severity": "error", "summary": "S.",
                   "evidence": ["x" * n + "<" * k]}  # fmt: skip
        return matrix.bridge_report({"bridge": "w", "status": "broken", "findings": [finding]})

    def size(msg: tuple[str, str]) -> int:
        return len(msg[0].encode()) + len(msg[1].encode())

    base = size(message(0, 0))
    k = (matrix.MAX_CONTENT_BYTES - base) % 2  # one '<' (5 bytes) fixes the parity
    n = (matrix.MAX_CONTENT_BYTES - base - 5 * k) // 2
    exact = message(n, k)
    assert size(exact) == matrix.MAX_CONTENT_BYTES
    assert "<details>" in exact[1] and "evidence is too long" not in exact[0]
    over = message(n + 1, k)
    assert "<details>" not in over[1] and "evidence is too long" in over[0]
