"""The helper's apply over its real socket: plan, digest-bound confirmation, the undo as a
`restore` of the apply's id, the listing, and the refusals. Real PostgreSQL, fake systemctl."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.apply.record import all_for
from tests.support.fleet import Host
from tests.support.reset_env import Systemd
from tests.test_apply import MDAD, OLD, UNIT, broken_gmessages, config_path, run_cli
from tests.test_helper_reset import (
    ADMIN,
    ask,
    audit_results,
    ok,
    refused,
    stale,
    warnings_said,
)
from tests.test_helper_server import TOKEN, Running, make_config, sockdir

BRIDGE = "gmessages"


@pytest.fixture
def host(tmp_path: Path, pg) -> Host:
    return broken_gmessages(tmp_path / "host", pg)


@pytest.fixture
def helper(host: Host, systemd: Systemd, sockdir: Path) -> Iterator[Running]:
    r = Running(make_config(host, sockdir, allow_reset=True))
    yield r
    r.stop()


def changes(systemd: Systemd) -> list[str]:
    """systemctl calls that change something (show only reads)."""
    return [c for c in systemd.calls() if not c.startswith("show ")]


def confirm(helper: Running, plan: dict[str, Any], **change: str) -> dict[str, Any]:
    body = {"v": 1, "token": TOKEN, "op": "apply", "bridge": BRIDGE, "plan": plan["id"],
            "digest": plan["digest"], "requested_by": ADMIN, **change}  # fmt: skip
    return helper.ask(body)


def test_plan_confirm_list_undo(helper: Running, host: Host, systemd: Systemd) -> None:
    config = config_path(host)
    before = config.read_bytes()
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    assert plan["id"].endswith("-apply") and plan["unit"] == UNIT and plan["was_active"]
    assert (plan["key_from"], plan["key_to"]) == (f'"{MDAD}"', f'"{OLD}"')
    assert plan["vars_yml"] == (
        f'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "{OLD}"'
    )
    assert config.read_bytes() == before and not changes(systemd)  # planning changes nothing
    assert not (helper.cfg.backup_dir / BRIDGE / plan["id"]).exists()

    done = ok(confirm(helper, plan))
    assert (done["id"], done["state"], done["requested_by"]) == (plan["id"], "done", ADMIN)
    assert done["steps"] == ["backup", "verify", "write", "restart"]
    assert done["vars_yml"] == plan["vars_yml"] and done["key_to"] == f'"{OLD}"'
    assert f"pickle_key: {OLD}".encode() in config.read_bytes()
    assert systemd.calls()[-1] == f"restart {UNIT}"

    listing = ok(ask(helper, "backups", bridge=BRIDGE))["backups"]
    assert [(b["id"], b["mode"], b["state"]) for b in listing] == [(plan["id"], "apply", "done")]

    undo = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    assert undo["mode"] == "apply" and "exactly as it was before the apply" in undo["put_back"]
    body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": BRIDGE, "backup": plan["id"],
            "digest": undo["digest"], "requested_by": ADMIN}  # fmt: skip
    back = ok(helper.ask(body))
    assert back["state"] == "undone" and back["source"] == plan["id"]
    assert config.read_bytes() == before


def test_a_stale_digest_changes_nothing(helper: Running, host: Host, systemd: Systemd) -> None:
    config = config_path(host)
    before = config.read_bytes()
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    message = refused(confirm(helper, {**plan, "digest": "0" * 16}))
    assert message == stale("the apply plan differs")
    assert config.read_bytes() == before and not changes(systemd)


def test_a_config_changed_since_the_plan_is_named_not_shown(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    """The helper remembers the plan it showed: the refusal says what changed (config.yaml's
    content, by name only: its hash and the keys stay out of the room)."""
    config = config_path(host)
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    config.write_bytes(config.read_bytes() + b"# edited by hand\n")
    edited = config.read_bytes()
    message = refused(confirm(helper, plan))
    assert message == stale("config.yaml's content changed")
    assert config.read_bytes() == edited and not changes(systemd)


def test_an_undo_plan_gone_stale_names_the_change(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    ok(confirm(helper, plan))
    applied = config_path(host).read_bytes()
    undo = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    systemd.set(UNIT, "inactive")
    body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": BRIDGE, "backup": plan["id"],
            "digest": undo["digest"], "requested_by": ADMIN}  # fmt: skip
    assert refused(helper.ask(body)) == stale(f"{UNIT} was running and is stopped now")
    assert config_path(host).read_bytes() == applied


def test_a_plan_id_of_another_kind_is_a_bad_request(helper: Running) -> None:
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    answer = confirm(helper, {**plan, "id": plan["id"].replace("-apply", "-crypto")})
    assert answer["error"]["code"] == "bad_request"
    answer = helper.ask(
        {"v": 1, "token": TOKEN, "op": "reset", "bridge": BRIDGE, "mode": "crypto",
         "plan": plan["id"], "digest": plan["digest"], "requested_by": ADMIN}
    )  # fmt: skip
    assert answer["error"]["code"] == "bad_request"


def test_off_unless_resets_are_allowed(host: Host, systemd: Systemd, sockdir: Path) -> None:
    r = Running(make_config(host, sockdir))
    try:
        message = refused(ask(r, "apply_plan", bridge=BRIDGE))
        assert message.startswith("Resets, restores and applies are turned off on this host")
    finally:
        r.stop()


def test_nothing_to_apply_is_a_refusal_in_one_sentence(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    ok(confirm(helper, ok(ask(helper, "apply_plan", bridge=BRIDGE))))
    message = refused(ask(helper, "apply_plan", bridge=BRIDGE))
    assert message.startswith("Config.yaml already has the key that opens the gmessages store")


@pytest.mark.parametrize(
    "step,state,why",
    [("apply_backup", "rolled_back", " (interrupted before config.yaml was written)"),
     ("apply_write", "done", "")],
)  # fmt: skip
def test_helper_start_finishes_an_interrupted_apply(
    host: Host,
    systemd: Systemd,
    sockdir: Path,
    caplog: pytest.LogCaptureFixture,
    step: str,
    state: str,
    why: str,
) -> None:
    """An apply killed before or after writing config.yaml: the next helper start rolls it
    back or finishes it (the restart) before serving, and says so in its log."""
    cfg = make_config(host, sockdir, allow_reset=True)
    argv = [*host.args(), "--backup-dir", str(cfg.backup_dir), "--yes", "--follow", "0"]
    crashed = run_cli("apply", BRIDGE, *argv, env={**systemd.env(), "BRIDGEDOCTOR_CRASH_AT": step})
    assert crashed.returncode == 137, crashed.stderr
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        helper = Running(cfg)
    try:
        (record,) = all_for(cfg.backup_dir / BRIDGE)
        assert record.state == state
        assert (f"restart {UNIT}" in systemd.calls()) == (state == "done")
        said = caplog.records[0]  # before "listening on"
        assert said.levelno == logging.WARNING
        assert said.getMessage() == (
            f"recovered: the interrupted apply {record.id} of {BRIDGE} was finished: {state}{why}."
        )
        assert ok(ask(helper, "backups", bridge=BRIDGE))["backups"][0]["state"] == state
    finally:
        helper.stop()


def test_an_apply_and_its_undo_answer_every_field_audit_and_log_who_confirmed(
    helper: Running, host: Host, systemd: Systemd, caplog: pytest.LogCaptureFixture
) -> None:
    """What the plugin renders after an apply and after its undo, field by field; the audit
    line's outcome of each of the four requests; the log line naming who confirmed each
    change; and the undo's record naming who undid it."""
    backups = helper.cfg.backup_dir / BRIDGE
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
        done = ok(confirm(helper, plan))
        undo = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
        body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": BRIDGE, "backup": plan["id"],
                "digest": undo["digest"], "requested_by": ADMIN}  # fmt: skip
        back = ok(helper.ask(body))
    (record,) = all_for(backups)
    vars_yml = f'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "{OLD}"'
    assert plan["vars_yml"] == vars_yml and plan["pin_steps"]
    common = {
        "id": plan["id"], "bridge": BRIDGE, "kind": "apply", "mode": "apply",
        "created_at": record.created_at, "requested_by": ADMIN,
        "location": str(backups / plan["id"]), "error": "", "unit": UNIT,
        "config": str(config_path(host)), "key_to": f'"{OLD}"', "vars_yml": vars_yml,
        "pin_steps": plan["pin_steps"],
    }  # fmt: skip
    assert done == {**common, "state": "done", "source": "",
                    "steps": ["backup", "verify", "write", "restart"]}  # fmt: skip
    assert back == {**common, "state": "undone", "source": plan["id"],
                    "steps": ["backup", "verify", "write", "restart", "put_back"]}  # fmt: skip
    assert record.state == "undone" and record.undone_by == ADMIN

    assert audit_results(caplog) == [
        "planned",
        "done",
        "planned",
        "done",
    ]
    assert warnings_said(caplog) == [
        f"apply to {BRIDGE} confirmed by {ADMIN}",
        f"undo of apply {plan['id']} to {BRIDGE} confirmed by {ADMIN}",
    ]


def test_an_undo_confirmed_with_a_digest_never_shown_says_its_plan_differs(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    ok(confirm(helper, plan))
    applied = config_path(host).read_bytes()
    calls = len(changes(systemd))
    body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": BRIDGE, "backup": plan["id"],
            "digest": "0" * 16, "requested_by": ADMIN}  # fmt: skip
    assert refused(helper.ask(body)) == stale("the restore plan differs")
    assert config_path(host).read_bytes() == applied and len(changes(systemd)) == calls


def test_an_apply_recorded_without_its_pin_still_undoes_and_answers_empty_ones(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    """A record whose `extra` holds no pin (an apply recorded by an earlier helper, a record
    edited by hand): its undo answers an empty snippet and no steps, never a placeholder."""
    before = config_path(host).read_bytes()
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    ok(confirm(helper, plan))
    path = helper.cfg.backup_dir / BRIDGE / plan["id"] / "apply.json"
    saved = json.loads(path.read_text("utf-8"))
    assert set(saved["extra"]) == {"vars_yml", "pin_steps"}
    path.write_text(json.dumps({**saved, "extra": {}}), "utf-8")
    undo = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": BRIDGE, "backup": plan["id"],
            "digest": undo["digest"], "requested_by": ADMIN}  # fmt: skip
    back = ok(helper.ask(body))
    assert (back["state"], back["vars_yml"], back["pin_steps"]) == ("undone", "", [])
    assert config_path(host).read_bytes() == before


def test_a_confirmation_seconds_after_the_plan_applies_under_the_plans_id(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    """Ids are stamped to the second: the apply re-plans under the id it showed (the one the
    plan's undo line names), not a new one, so a confirmation in a later second still matches
    its digest and records under that id."""
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    time.sleep(1.1)  # the next second's id would differ, and with it the digest
    done = ok(confirm(helper, plan))
    assert done["id"] == plan["id"] and done["state"] == "done"
    assert [r.id for r in all_for(helper.cfg.backup_dir / BRIDGE)] == [plan["id"]]


def test_a_listing_holds_applies_and_resets_in_the_order_they_were_made(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    plan = ok(ask(helper, "apply_plan", bridge=BRIDGE))
    ok(confirm(helper, plan))
    reset = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    body = {"v": 1, "token": TOKEN, "op": "reset", "bridge": BRIDGE, "mode": "crypto",
            "plan": reset["id"], "digest": reset["digest"], "requested_by": ADMIN}  # fmt: skip
    ok(helper.ask(body))
    assert plan["id"] < reset["id"]
    listing = ok(ask(helper, "backups", bridge=BRIDGE))["backups"]
    assert [(b["id"], b["kind"], b["mode"]) for b in listing] == [
        (plan["id"], "apply", "apply"),
        (reset["id"], "reset", "crypto"),
    ]
