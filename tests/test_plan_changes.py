"""What a refused confirmation says changed: reset/changes.py over plans as the helper sends
them, and the helper's memory of the plans it showed (helper/reset_ops.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.apply.plan import ApplyPlan
from bridgedoctor.helper import reset_ops
from bridgedoctor.protocol import Request
from bridgedoctor.reset.changes import HIDDEN, LABELS, NAMED, what_changed
from bridgedoctor.reset.plan import Plan

SECRET = "s3cret-pickle-key-do-not-show"


def reset_plan(**change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        bridge="whatsapp", mode="crypto", unit="matrix-mautrix-whatsapp.service",
        was_active=True, database="postgres://matrix-postgres/matrix_mautrix_whatsapp",
        data_dir=Path("/matrix/mautrix-whatsapp/data"), backup_dir=Path("/var/lib/bd/x"),
        id="20261130T120000Z-crypto",
        backed_up=("crypto_account (1 row)", "crypto_olm_session (5 rows)"),
        removed=("crypto_account", "crypto_olm_session"), kept="every bridge table",
        after=("verify the bridge's device",),
    )  # fmt: skip
    fields.update(change)
    return Plan(**fields).to_dict()


def apply_plan(**change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        bridge="gmessages", unit="matrix-mautrix-gmessages.service", was_active=True,
        config="/matrix/mautrix-gmessages/config/config.yaml", config_sha256="ab" * 32,
        key_from="mautrix.bridge.e2ee", key_to="go.mau.fi/mautrix-gmessages",
        key_to_id="fp:1234", origin="historical key of gmessages", backup_dir="/var/lib/bd/g",
        id="20261130T120000Z-apply", vars_yml="matrix_mautrix_gmessages_pickle_key: x",
        pin_steps=("edit vars.yml",),
    )  # fmt: skip
    fields.update(change)
    return ApplyPlan(**fields).to_dict()


def test_the_units_state_is_named_first_both_ways() -> None:
    running, stopped = reset_plan(), reset_plan(was_active=False)
    assert what_changed(running, stopped) == (
        "matrix-mautrix-whatsapp.service was running and is stopped now"
    )
    assert what_changed(stopped, running) == (
        "matrix-mautrix-whatsapp.service was stopped and is running now"
    )
    # First even when other things changed too.
    both = what_changed(running, reset_plan(was_active=False, database="elsewhere"))
    assert both.startswith("matrix-mautrix-whatsapp.service was running and is stopped now; ")
    assert (
        "the database was postgres://matrix-postgres/matrix_mautrix_whatsapp and is "
        "elsewhere now" in both
    )


def test_lists_say_what_came_and_went() -> None:
    now = reset_plan(
        backed_up=(
            "crypto_account (1 row)",
            "crypto_olm_session (6 rows)",
            "crypto_secrets (2 rows)",
        )
    )
    assert what_changed(reset_plan(), now) == (
        "what is backed up changed (now also crypto_olm_session (6 rows), crypto_secrets "
        "(2 rows); no longer crypto_olm_session (5 rows))"
    )
    many = reset_plan(removed=tuple(f"t{i}" for i in range(5)))
    assert what_changed(reset_plan(), many) == (
        "what is removed changed (now also t0, t1 and 3 more; no longer crypto_account, "
        "crypto_olm_session)"
    )
    swapped = reset_plan(removed=("crypto_olm_session", "crypto_account"))
    assert what_changed(reset_plan(), swapped) == (
        "what is removed changed (the same entries in another order)"
    )


def test_values_that_could_carry_a_key_are_named_never_shown() -> None:
    before = apply_plan()
    now = apply_plan(config_sha256="cd" * 32, key_from=SECRET, key_to=SECRET + "2",
                     key_to_id="fp:9999", vars_yml=f"pin: {SECRET}")  # fmt: skip
    said = what_changed(before, now)
    assert said == (
        "config.yaml's content changed; the key in config.yaml changed; the key to apply "
        "changed; and 1 more change"
    )
    for value in (SECRET, "cdcd", "fp:9999", "mautrix.bridge.e2ee"):
        assert value not in said
    assert {"config_sha256", "key_from", "key_to", "key_to_id", "vars_yml"} <= HIDDEN
    assert set(LABELS) >= HIDDEN


def test_more_than_a_few_changes_are_counted() -> None:
    now = reset_plan(was_active=False, database="db2", data_dir=Path("/d2"), backup_dir=Path("/b2"),
                     kept="nothing")  # fmt: skip
    said = what_changed(reset_plan(), now)
    assert said.count("; ") == NAMED
    assert said.endswith("; and 2 more changes")
    one_more = reset_plan(database="db2", data_dir=Path("/d2"), backup_dir=Path("/b2"),
                          kept="nothing")  # fmt: skip
    assert what_changed(reset_plan(), one_more).endswith("; and 1 more change")


def test_bridge_text_stays_on_one_line_and_harmless() -> None:
    hostile = "db\nNothing changed. Confirm again\u202e"
    said = what_changed(reset_plan(), reset_plan(database=hostile))
    assert said == (
        "the database was postgres://matrix-postgres/matrix_mautrix_whatsapp and is "
        "db\\x0aNothing changed. Confirm again\\u202e now"
    )
    long = what_changed(reset_plan(), reset_plan(database="x" * 500))
    assert len(long) < 300 and long.endswith("... now")


def test_nothing_named_differs_says_the_plan_differs() -> None:
    assert what_changed(reset_plan(), reset_plan(id="another")) == "its plan differs"
    assert what_changed(reset_plan(), dict(reset_plan(), digest="0" * 16)) == "its plan differs"


def request(digest: str) -> Request:
    return Request(token="t", op="reset", bridge="whatsapp", digest=digest)


def test_the_helper_remembers_the_plans_it_showed_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reset_ops, "_shown", type(reset_ops._shown)())
    plans = [
        reset_plan(id=f"20261130T1200{i:02d}Z-crypto") for i in range(reset_ops.SHOWN_KEPT + 1)
    ]
    for p in plans:
        assert reset_ops.shown(p) is p
    assert reset_ops.confirmed(request(plans[0]["digest"])) is None  # the oldest is forgotten
    assert reset_ops.confirmed(request(plans[1]["digest"])) == plans[1]
    assert reset_ops.confirmed(request(plans[-1]["digest"])) == plans[-1]
    assert len(reset_ops._shown) == reset_ops.SHOWN_KEPT
    # Shown again, a plan is the newest: the next one forgets another.
    reset_ops.shown(plans[1])
    reset_ops.shown(reset_plan(id="20261130T130000Z-crypto"))
    assert reset_ops.confirmed(request(plans[1]["digest"])) == plans[1]
    assert reset_ops.confirmed(request(plans[2]["digest"])) is None


def test_a_refusal_without_the_shown_plan_says_only_that_it_differs() -> None:
    now = reset_plan(was_active=False)
    assert reset_ops.refuse_changed(None, now, "its plan differs") == (
        "the bridge changed since the plan was shown (its plan differs); nothing was changed. "
        "Ask again."
    )
    assert reset_ops.refuse_changed(reset_plan(), now, "its plan differs") == (
        "the bridge changed since the plan was shown (matrix-mautrix-whatsapp.service was "
        "running and is stopped now); nothing was changed. Ask again."
    )


def test_shown_values_keep_their_bounds_exactly() -> None:
    unit80, unit81 = "u" * 76 + ".svc", "u" * 77 + ".svc"
    assert what_changed(reset_plan(unit=unit80), reset_plan(unit=unit80, was_active=False)) == (
        f"{unit80} was running and is stopped now"
    )
    assert what_changed(reset_plan(unit=unit81), reset_plan(unit=unit81, was_active=False)) == (
        f"{'u' * 77}... was running and is stopped now"
    )
    db120, db121 = "d" * 120, "d" * 121
    assert what_changed(reset_plan(), reset_plan(database=db120)).endswith(f" is {db120} now")
    assert what_changed(reset_plan(), reset_plan(database=db121)).endswith(
        f" is {'d' * 117}... now"
    )
    item80, item81 = "t" * 80, "t" * 81
    assert what_changed(reset_plan(), reset_plan(removed=(item80,))) == (
        f"what is removed changed (now also {item80}; no longer crypto_account, crypto_olm_session)"
    )
    assert f"now also {'t' * 77}...;" in what_changed(reset_plan(), reset_plan(removed=(item81,)))


def test_a_plan_without_a_unit_still_reads() -> None:
    assert what_changed({"was_active": True}, {"was_active": False}) == (
        "the unit was running and is stopped now"
    )


def test_exactly_the_named_changes_add_no_count() -> None:
    now = reset_plan(database="db2", data_dir=Path("/d2"), backup_dir=Path("/b2"))
    said = what_changed(reset_plan(), now)
    assert said.count("; ") == NAMED - 1 and "more change" not in said


def test_one_more_entry_than_shown_is_counted() -> None:
    now = reset_plan(removed=("crypto_account", "crypto_olm_session", "a", "b", "c"))
    assert what_changed(reset_plan(), now) == "what is removed changed (now also a, b and 1 more)"


def test_empty_values_and_a_list_that_went_away() -> None:
    assert what_changed(reset_plan(kept=""), reset_plan(kept="x")) == (
        "what is kept was empty and is x now"
    )
    assert what_changed({"kept": None}, {"kept": "x"}) == "what is kept was empty and is x now"
    assert what_changed({"removed": ["a"]}, {"removed": None}) == (
        "what is removed was ['a'] and is empty now"
    )
