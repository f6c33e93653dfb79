"""render/neutral.py: bridge-chosen text shown as visible escapes, our own text untouched."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridgedoctor.findings import BridgeReport, Finding
from bridgedoctor.render import matrix, matrix_reset, text
from bridgedoctor.render.neutral import neutral, one_line


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("a\u202eb", "a\\u202eb"),  # right-to-left override
        ("\u2066x\u2069", "\\u2066x\\u2069"),  # isolates
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # marks
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("\x1b[2Jwiped", "\\x1b[2Jwiped"),  # terminal escape
        ("bell\x07 nul\x00 del\x7f c1\x9b", "bell\\x07 nul\\x00 del\\x7f c1\\x9b"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tab\there\r", "tab\\x09here\\x0d"),
    ],
)
def test_neutral(raw: str, shown: str) -> None:
    assert neutral(raw) == shown


def test_our_own_text_is_untouched() -> None:
    ours = '🟩 gmessages: ok — "mautrix.bridge.e2ee" opens it. ⚠️ ℹ️ ✅ ❌ ⏳ Größe 日本\nnext line'
    assert neutral(ours) == ours


def test_one_line() -> None:
    assert one_line("a\nb") == "a\\x0ab"
    assert one_line("x" * 500, 10) == "xxxxxxx..."


@given(st.text())
def test_property_nothing_invisible_survives(s: str) -> None:
    out = neutral(s)
    assert neutral(out) == out  # idempotent: renderers may apply it twice
    for c in out:
        assert c == "\n" or not (
            ord(c) < 32 or unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cc")
        )


HOSTILE = "DEV\u202e\x1b[31m\n🟩 forged"


def test_every_renderer_neutralises() -> None:
    fix = {"vars_yml": HOSTILE, "steps": [HOSTILE]}
    finding = {"code": "c", "severity": "error", "summary": HOSTILE, "evidence": [HOSTILE]}
    report = {"bridge": "x", "status": "broken", "facts": {"device": HOSTILE},
              "findings": [{**finding, "fix": fix}]}  # fmt: skip
    plan = {"bridge": "x", "mode": "full", "unit": HOSTILE, "database": HOSTILE,
            "data_dir": HOSTILE, "backed_up": [HOSTILE], "removed": [HOSTILE], "after": [HOSTILE],
            "kept": HOSTILE, "id": "i", "backup_dir": HOSTILE, "was_active": True}  # fmt: skip
    messages = [
        matrix.bridge_report(report),
        matrix.fleet_report({"bridges": [report]}),
        matrix.bridge_list({"bridges": [HOSTILE]}),
        matrix.error(HOSTILE),
        matrix.info(HOSTILE),
        matrix_reset.reset_plan(plan, "123456", 300),
        matrix_reset.restore_plan({**plan, "backup": "b"}, "123456", 300),
        matrix_reset.backups({"bridge": "x", "backups": [{"id": HOSTILE, "error": HOSTILE}]}),
    ]
    for plain, html in messages:
        for s in (plain, html):
            assert "\u202e" not in s and "\x1b" not in s, s
    r = BridgeReport("x", [Finding("c", "error", HOSTILE)], {"device": HOSTILE})
    assert "\u202e" not in text.bridge(r) and "\x1b" not in text.bridge(r)


def test_plan_names_the_database_and_data_dir_outside_the_fold() -> None:
    plan = {"bridge": "x", "mode": "full", "unit": "u", "database": "postgres://r@h:5432/db",
            "data_dir": "/matrix/mautrix-x/data", "id": "i", "was_active": True}  # fmt: skip
    plain, html = matrix_reset.reset_plan(plan, "123456", 300)
    visible = html.split("<details>")[0]
    assert "postgres://r@h:5432/db" in visible and "/matrix/mautrix-x/data" in visible
    assert "Data directory: /matrix/mautrix-x/data (emptied)" in plain
    plain, html = matrix_reset.restore_plan({**plan, "backup": "b", "mode": "crypto"}, "1", 60)
    assert "postgres://r@h:5432/db" in html and "(not touched)" in plain


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1f \x20 \x7e", "\\x1f   ~"),  # the last control before the space; space and ~ are text
        ("\x7f\x80\x9f\xa0", "\\x7f\\x80\\x9f\xa0"),  # DEL and C1 escaped; no-break space is text
        ("soft\xadhyphen", "soft\\xadhyphen"),  # format character below U+0100: \x
        ("tag\U000e0001", "tag\\U000e0001"),  # format character above U+FFFF: \U, eight digits
        ("ÿ Ā 𝔘", "ÿ Ā 𝔘"),  # letters on either side of those bounds are text
    ],
)
def test_escapes_at_the_bounds(raw: str, shown: str) -> None:
    assert neutral(raw) == shown


def test_one_line_is_bounded_at_200_by_default() -> None:
    assert one_line("x" * 200) == "x" * 200
    assert one_line("x" * 201) == "x" * 197 + "..."
    assert one_line("a\tb", 10) == "a\\x09b"
    assert neutral("a\nb", keep_newlines=False) == "a\\x0ab" and neutral("a\nb") == "a\nb"
