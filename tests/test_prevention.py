"""Prevention: `pickle_key_unpinned` and the exact reading of the admin's inventory, in both MDAD
naming eras, against real crypto stores in PostgreSQL and MDAD-shaped inventories."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bridgedoctor.facts import InventoryFacts, ProbeError
from bridgedoctor.probes.inventory import read_inventory
from tests.fixtures import mdad
from tests.support.cli import run, run_json
from tests.support.fleet import Host
from tests.support.inventory import enable, pin_extension, pin_variable, write_inventory
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

OLD_GM = "go.mau.fi/mautrix-gmessages"  # gmessages' pre-bridgev2 key; MDAD renders another now
MDAD_GM = "mautrix.bridge.e2ee"
WA = "maunium.net/go/mautrix-whatsapp"  # whatsapp: what MDAD renders and its store opens with
GM_CURRENT = "matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key"
GM_LEGACY = "matrix_mautrix_gmessages_bridge_encryption_pickle_key"
_counter = itertools.count()


@pytest.fixture
def host(tmp_path: Path, pg: PgServer) -> Host:
    return Host.at(tmp_path, pg)


@pytest.fixture
def prefix() -> str:
    return f"pv{next(_counter)}_"


def codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def finding(report: dict, code: str) -> dict:
    return next(f for f in report["findings"] if f["code"] == code)


def old_key_gmessages(host: Host, prefix: str, tag: str | None = None) -> None:
    """gmessages whose store opens with its old key, which config.yaml still has: works today."""
    host.add(
        "gmessages",
        StoreSpec("gmessages", account_key=OLD_GM),
        pickle_key=OLD_GM,
        image_tag=tag,
        db_prefix=prefix,
    )


def check(capsys, host: Host, *extra: str, bridge: str = "gmessages") -> tuple[int, dict]:
    return run_json(capsys, "check", bridge, *host.args(*extra))


# --- without an inventory ---------------------------------------------------------------------


def test_unpinned_old_key_is_warned_with_the_pin(host: Host, prefix: str, capsys) -> None:
    old_key_gmessages(host, prefix)
    code, report = check(capsys, host)
    assert (code, report["status"]) == (1, "warning")
    # Worst first (rules/verdict.py): the warning is the verdict.
    assert codes(report) == ["pickle_key_unpinned", "pickle_key_ok"]
    f = finding(report, "pickle_key_unpinned")
    assert f["severity"] == "warning"
    assert f'config.yaml still holds "{OLD_GM}"' in f["summary"]
    assert f'MDAD\'s defaults render "{MDAD_GM}"' in f["summary"]
    assert "will lock the bridge out" in f["summary"]
    assert f["fix"]["vars_yml"] == f'{GM_CURRENT}: "{OLD_GM}"'  # v0.2608.0: after the rename
    assert "pass --inventory" in f["evidence"][0]


def test_the_default_key_needs_no_pin(host: Host, prefix: str, capsys) -> None:
    host.add("gmessages", StoreSpec("gmessages", account_key=MDAD_GM), db_prefix=prefix)
    code, report = check(capsys, host)
    assert (code, codes(report)) == (0, ["pickle_key_ok"])


def test_compiled_in_keys_are_never_unpinned(host: Host, prefix: str, capsys) -> None:
    host.add(
        "discord",
        StoreSpec("discord", account_key="maunium.net/go/mautrix-whatsapp"),
        db_prefix=prefix,
    )
    code, report = check(capsys, host, bridge="discord")
    assert (code, codes(report)) == (0, ["pickle_key_ok"])


# --- with an inventory, current naming --------------------------------------------------------


def test_pinned_to_the_proven_key_is_quiet(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(
        tmp_path, enable("gmessages", "current") + pin_variable("gmessages", OLD_GM)
    )
    code, report = check(capsys, host, "--inventory", str(inv))
    assert (code, report["status"]) == (0, "ok")
    pinned = finding(report, "pickle_key_pinned")
    assert pinned["severity"] == "info"
    assert f"host_vars/matrix.example.com/vars.yml line 9: {GM_CURRENT}" in pinned["summary"]


def test_pinned_to_another_key_breaks_at_the_next_run(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(tmp_path, pin_variable("gmessages", MDAD_GM))
    code, report = check(capsys, host, "--inventory", str(inv))
    assert (code, report["status"]) == (1, "warning")
    f = finding(report, "pickle_key_pin_wrong")
    assert f["summary"].startswith("gmessages works now, but breaks at the next playbook run: ")
    assert f'pins "{MDAD_GM}", while the crypto store opens only with "{OLD_GM}"' in f["summary"]
    assert f["fix"]["vars_yml"] == f'{GM_CURRENT}: "{OLD_GM}"'


def test_the_default_pinned_wrong_also_breaks(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    host.add("whatsapp", StoreSpec("whatsapp", account_key=WA), db_prefix=prefix)  # default
    inv = write_inventory(tmp_path, pin_variable("whatsapp", "mautrix.bridge.e2ee"))
    code, report = check(capsys, host, "--inventory", str(inv), bridge="whatsapp")
    assert code == 1 and "pickle_key_pin_wrong" in codes(report)


def test_not_pinned_is_warned_after_reading_vars(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(tmp_path, enable("gmessages", "current"))
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 1
    assert finding(report, "pickle_key_unpinned")["evidence"] == ["vars.yml does not pin it."]


@pytest.mark.parametrize(
    "raw,why",
    [
        ('"{{ vault_gmessages_pickle_key }}"', "it is a Jinja expression, not a literal"),
        ("!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162", "it is encrypted with Ansible Vault"),
    ],
    ids=["jinja", "vault"],
)
def test_a_value_that_is_not_a_literal_cannot_be_judged(
    host: Host, prefix: str, capsys, tmp_path: Path, raw: str, why: str
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(tmp_path, pin_variable("gmessages", "", raw=raw))
    code, report = check(capsys, host, "--inventory", str(inv))
    assert (code, report["status"]) == (0, "ok")
    f = finding(report, "pickle_key_pin_unknown")
    assert f["severity"] == "info"
    assert "Cannot judge the pickle-key pin of gmessages in the inventory (" in f["summary"]
    assert why in f["summary"]
    assert f'make sure it renders "{OLD_GM}"' in f["summary"]


def test_the_extension_yaml_wins_over_the_variable(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    body = pin_variable("gmessages", MDAD_GM) + pin_extension("gmessages", OLD_GM)
    inv = write_inventory(tmp_path, body)
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 0
    assert (
        "matrix_bridge_mautrix_gmessages_configuration_extension_yaml"
        in finding(report, "pickle_key_pinned")["summary"]
    )


def test_extension_only_bridges_pin_through_the_extension(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old = "maunium.net/go/mautrix-signal"  # signal's pre-release key; MDAD hard-codes another
    host.add("signal", StoreSpec("signal", account_key=old), pickle_key=old, db_prefix=prefix)
    code, report = check(capsys, host, bridge="signal")
    assert code == 1
    fix = finding(report, "pickle_key_unpinned")["fix"]["vars_yml"]
    assert "matrix_bridge_mautrix_signal_configuration_extension_yaml: |" in fix
    inv = write_inventory(tmp_path, pin_extension("signal", old))
    code, report = check(capsys, host, "--inventory", str(inv), bridge="signal")
    assert code == 0 and "pickle_key_pinned" in codes(report)


# --- the naming eras --------------------------------------------------------------------------

LEGACY_TAG = "v0.2506.0"  # older than v0.2605.0, the tag MDAD pinned at the 2026-07-16 rename


def test_legacy_checkout_reads_the_legacy_pin(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix, tag=LEGACY_TAG)
    code, report = check(capsys, host)
    snippet = finding(report, "pickle_key_unpinned")["fix"]["vars_yml"]
    assert f'{GM_LEGACY}: "{OLD_GM}"' in snippet.splitlines() and GM_CURRENT not in snippet
    inv = write_inventory(tmp_path, pin_variable("gmessages", OLD_GM, era="legacy"))
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 0 and GM_LEGACY in finding(report, "pickle_key_pinned")["summary"]


def test_a_pin_under_the_other_eras_name_does_not_count(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix, tag=LEGACY_TAG)
    inv = write_inventory(
        tmp_path,
        enable("whatsapp", "legacy") + pin_variable("gmessages", OLD_GM, era="current"),
    )
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 1
    (evidence,) = finding(report, "pickle_key_unpinned")["evidence"]
    assert evidence.startswith("vars.yml does not pin it: ")
    assert f"{GM_CURRENT} uses the other MDAD naming" in evidence
    assert "your checkout (before 2026-07-16) does not read" in evidence


def test_the_inventory_settles_an_ambiguous_image_tag(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix, tag="v0.2605.0")  # pinned both before and after the rename
    code, report = check(capsys, host)
    both = finding(report, "pickle_key_unpinned")["fix"]["vars_yml"]
    assert GM_CURRENT in both and GM_LEGACY in both
    inv = write_inventory(tmp_path, enable("gmessages", "legacy"))
    code, report = check(capsys, host, "--inventory", str(inv))
    snippet = finding(report, "pickle_key_unpinned")["fix"]["vars_yml"]
    assert f'{GM_LEGACY}: "{OLD_GM}"' in snippet.splitlines() and GM_CURRENT not in snippet
    assert "matrix_mautrix_* names" in report["facts"]["naming"]


# --- which host -------------------------------------------------------------------------------


def test_several_hosts_are_told_apart_by_matrix_domain(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(tmp_path, pin_variable("gmessages", MDAD_GM), domain="other.org")
    write_inventory(tmp_path, pin_variable("gmessages", OLD_GM), domain="example.com")
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 0 and "matrix.example.com" in finding(report, "pickle_key_pinned")["summary"]


def test_an_inventory_of_another_server_cannot_judge(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)
    inv = write_inventory(tmp_path, pin_variable("gmessages", OLD_GM), domain="other.org")
    code, report = check(capsys, host, "--inventory", str(inv))
    assert code == 0
    assert (
        "the inventory's only host is not this server (matrix_domain example.com)"
        in (finding(report, "pickle_key_pin_unknown")["summary"])
    )


# --- check all, the CLI, the probe --------------------------------------------------------------


def test_check_all_pins_exactly_the_bridges_that_need_it(
    host: Host, prefix: str, capsys, tmp_path: Path
) -> None:
    old_key_gmessages(host, prefix)  # works, unpinned: needs the pin
    host.add("whatsapp", StoreSpec("whatsapp", account_key=WA), db_prefix=prefix)  # no
    host.add("slack", StoreSpec("slack", account_key="mautrix.bridge.e2ee"), db_prefix=prefix)
    code, fleet = run_json(capsys, "check", "all", *host.args())
    block = fleet["pin"]["vars_yml"]
    assert "# gmessages: proven key" in block and "# slack: proven key" in block
    assert "whatsapp" not in block
    inv = write_inventory(tmp_path, pin_variable("gmessages", OLD_GM))
    code, fleet = run_json(capsys, "check", "all", *host.args("--inventory", str(inv)))
    assert fleet["pin"]["vars_yml"].startswith("# slack: proven key")  # broken: still needs it
    assert "gmessages" not in fleet["pin"]["vars_yml"]
    code, text = run(capsys, "check", "all", *host.args("--inventory", str(inv)))
    block = text.split("Pin these keys in vars.yml before the next playbook run:\n")[1]
    assert "# slack: proven key" in block and "gmessages" not in block.split("Details")[0]


def test_check_all_with_nothing_to_pin_has_no_block(host: Host, prefix: str, capsys) -> None:
    host.add("whatsapp", StoreSpec("whatsapp", account_key=WA), db_prefix=prefix)
    code, fleet = run_json(capsys, "check", "all", *host.args())
    assert code == 0 and "pin" not in fleet


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: p.mkdir(), "has no host_vars directory"),
        (lambda p: (p / "host_vars" / "h").mkdir(parents=True), "holds no */vars.yml"),
        (
            lambda p: (
                (p / "host_vars" / "h").mkdir(parents=True),
                (p / "host_vars" / "h" / "vars.yml").write_text("a: [\n"),
            ),
            "is not valid YAML at line 2",
        ),
    ],
    ids=["no-host-vars", "no-vars", "bad-yaml"],
)
def test_an_unusable_inventory_is_bad_usage(
    host: Host, prefix: str, capsys, tmp_path: Path, setup, message: str
) -> None:
    old_key_gmessages(host, prefix)
    inv = tmp_path / "inv"
    setup(inv)
    code, text = run(capsys, "check", "gmessages", *host.args("--inventory", str(inv)))
    assert code == 2
    assert text.startswith("bridgedoctor: --inventory: ") and message in text
    assert len(text.strip().splitlines()) == 1


def test_probe_keeps_only_pickle_key_variables(tmp_path: Path) -> None:
    body = (
        pin_variable("gmessages", "first")
        + pin_variable("gmessages", "second")  # Ansible: the later one wins
        + "matrix_bridge_mautrix_slack_bridge_encryption_pickle_key: yes\n"
        + "matrix_bridge_mautrix_twitter_bridge_encryption_pickle_key: !unsafe '{{ raw }}'\n"
        + "matrix_bridge_mautrix_signal_configuration_extension_yaml: |\n"
        + "  {% if x %}\n  encryption: {pickle_key: a}\n  {% endif %}\n"
        + "matrix_bridge_mautrix_telegram_configuration_extension_yaml: |\n  bridge: {}\n"
    )
    inv = read_inventory(write_inventory(tmp_path, body))
    assert isinstance(inv, InventoryFacts)
    (f,) = inv.files
    assert {k: (v.kind, v.text) for k, v in f.values.items()} == {
        GM_CURRENT: ("literal", "second"),
        "matrix_bridge_mautrix_slack_bridge_encryption_pickle_key": ("other", ""),
        "matrix_bridge_mautrix_twitter_bridge_encryption_pickle_key": ("literal", "{{ raw }}"),
        "matrix_bridge_mautrix_signal_configuration_extension_yaml": ("unparsable", ""),
    }
    assert f.eras == frozenset({"current"})
    assert f.domain is not None and f.domain.text == "example.com"
    assert "generic-secret" not in repr(inv)


def test_probe_refuses_a_huge_file(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, "x: '" + "a" * (4 * 1024 * 1024) + "'\n")
    result = read_inventory(inv)
    assert isinstance(result, ProbeError) and "larger than 4 MiB" in result.message


def test_probe_survives_deep_nesting(tmp_path: Path) -> None:
    result = read_inventory(write_inventory(tmp_path, "x: " + "[" * 100_000 + "\n"))
    assert isinstance(result, ProbeError) and "not valid YAML" in result.message


def test_unit_pins_are_rendered_for_each_era() -> None:
    # The fixtures' legacy-era unit really is older than the rename tag MDAD pinned.
    assert mdad.render_unit("gmessages", image_tag=LEGACY_TAG).count(LEGACY_TAG) == 1


def _vars(tmp_path: Path, text: str, host: str = "h") -> Path:
    """An inventory whose one vars.yml is exactly `text` (lines counted from 1)."""
    inv = tmp_path / "inv"
    (inv / "host_vars" / host).mkdir(parents=True, exist_ok=True)
    (inv / "host_vars" / host / "vars.yml").write_text(text)
    return inv


def test_each_kind_of_value_with_its_line(tmp_path: Path) -> None:
    """Every value that can set a pickle key, classified as Ansible would read it, with the
    line it is on; the extension's key reported at the extension variable's line."""
    from bridgedoctor.facts import VarsValue

    p = "matrix_bridge_mautrix_"
    text = (
        f"{p}a_bridge_encryption_pickle_key: plain-key\n"  # 1
        f"{p}b_bridge_encryption_pickle_key: yes\n"  # 2: YAML 1.1 reads a bool
        f"{p}c_bridge_encryption_pickle_key: 'yes'\n"  # 3: quoted, a string
        f"{p}d_bridge_encryption_pickle_key: !custom abc\n"  # 4: a tag Ansible does not know
        f"{p}e_bridge_encryption_pickle_key: {{a: 1}}\n"  # 5
        f"{p}f_bridge_encryption_pickle_key: !vault |\n"  # 6
        "  $ANSIBLE_VAULT;1.1;AES256\n  3338\n"
        f"{p}g_bridge_encryption_pickle_key: '{{% if x %}}k{{% endif %}}'\n"  # 9
        f'{p}h_bridge_encryption_pickle_key: "{{{{ k }}}}"\n'  # 10
        f"{p}i_bridge_encryption_pickle_key: !unsafe '{{{{ raw }}}}'\n"  # 11
        f"{p}j_configuration_extension_yaml: |\n"  # 12
        "  bridge: {}\n  encryption:\n    pickle_key: ext-key\n"
        f"{p}k_configuration_extension_yaml: {{encryption: {{pickle_key: x}}}}\n"  # 16
        f"{p}l_configuration_extension_yaml: !vault |\n"  # 17
        "  $ANSIBLE_VAULT;1.1;AES256\n  3338\n"
        f"{p}m_configuration_extension_yaml: |\n"  # 20
        "  encryption:\n    pickle_key: 'a{% if x %}b{% endif %}'\n"
        f"{p}n_configuration_extension_yaml: |\n"  # 23
        "  encryption: [\n"
        f"{p}o_configuration_extension_yaml: |\n"  # 25
        "  encryption:\n    pickle_key: '{{ k }}'\n"
        f"{p}p_configuration_extension_yaml: 'encryption: {{pickle_key: no}}'\n"  # 28
        "matrix_domain: example.org\n"  # 29
    )
    path = _vars(tmp_path, text)
    inv = read_inventory(path)
    assert isinstance(inv, InventoryFacts)
    (f,) = inv.files
    assert f.values == {
        f"{p}a_bridge_encryption_pickle_key": VarsValue("literal", "plain-key", 1),
        f"{p}b_bridge_encryption_pickle_key": VarsValue("other", "", 2),
        f"{p}c_bridge_encryption_pickle_key": VarsValue("literal", "yes", 3),
        f"{p}d_bridge_encryption_pickle_key": VarsValue("other", "", 4),
        f"{p}e_bridge_encryption_pickle_key": VarsValue("other", "", 5),
        f"{p}f_bridge_encryption_pickle_key": VarsValue("vault", "", 6),
        f"{p}g_bridge_encryption_pickle_key": VarsValue("template", "{% if x %}k{% endif %}", 9),
        f"{p}h_bridge_encryption_pickle_key": VarsValue("template", "{{ k }}", 10),
        f"{p}i_bridge_encryption_pickle_key": VarsValue("literal", "{{ raw }}", 11),
        f"{p}j_configuration_extension_yaml": VarsValue("literal", "ext-key", 12),
        f"{p}k_configuration_extension_yaml": VarsValue("other", "", 16),
        f"{p}l_configuration_extension_yaml": VarsValue("vault", "", 17),
        f"{p}m_configuration_extension_yaml": VarsValue("unparsable", "", 20),
        f"{p}n_configuration_extension_yaml": VarsValue("unparsable", "", 23),
        f"{p}o_configuration_extension_yaml": VarsValue("template", "{{ k }}", 25),
        f"{p}p_configuration_extension_yaml": VarsValue("other", "", 28),
    }
    assert f.domain == VarsValue("literal", "example.org", 29)
    assert f.eras == frozenset({"current"}) and f.path == path / "host_vars" / "h" / "vars.yml"


def test_a_later_extension_without_a_key_undoes_an_earlier_one(tmp_path: Path) -> None:
    """Ansible keeps the last of a duplicate key: an extension that sets no pickle key."""
    text = (
        pin_extension("gmessages", "first")
        + "matrix_mautrix_gmessages_configuration_extension_yaml: |\n  bridge: {}\n"
        + "matrix_bridge_mautrix_gmessages_configuration_extension_yaml: |\n  bridge: {}\n"
        + "other_variable: 1\n"
    )
    inv = read_inventory(_vars(tmp_path, text))
    assert isinstance(inv, InventoryFacts)
    (f,) = inv.files
    assert f.values == {} and f.domain is None
    assert f.eras == frozenset({"current", "legacy"})


def test_a_vars_file_that_cannot_be_read_too_big_or_not_text(tmp_path: Path) -> None:
    """Each refusal is one sentence with the file's path; the size cap holds to the byte."""
    from bridgedoctor.probes.inventory import MAX_VARS_BYTES

    inv = tmp_path / "inv"
    path = inv / "host_vars" / "h" / "vars.yml"
    path.mkdir(parents=True)  # a directory where the file should be
    assert read_inventory(inv) == ProbeError(
        "inventory_unreadable", f"{path} cannot be read (Is a directory)."
    )
    path.rmdir()
    line = "matrix_domain: example.org\n"
    path.write_text(line + "#" * (MAX_VARS_BYTES - len(line) - 1) + "\n")
    fits = read_inventory(inv)
    assert isinstance(fits, InventoryFacts) and fits.files[0].domain is not None
    with path.open("a") as f:
        f.write("#")
    assert read_inventory(inv) == ProbeError(
        "inventory_unreadable", f"{path} is larger than 4 MiB."
    )
    path.write_bytes(b"matrix_domain: caf\xe9\n")
    assert read_inventory(inv) == ProbeError("inventory_unreadable", f"{path} is not UTF-8 text.")


def test_a_vars_file_that_is_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    (inv / "host_vars" / "h").mkdir(parents=True)
    path = inv / "host_vars" / "h" / "vars.yml"
    for text, why in (
        ("a: 1\nb: [\n", "is not valid YAML at line 3"),
        ("x: " + "[" * 100_000 + "\n", "is not valid YAML"),  # too deep: no line to name
        ("- a\n- b\n", "does not hold a YAML mapping"),
        ("just text\n", "does not hold a YAML mapping"),
    ):
        path.write_text(text)
        assert read_inventory(inv) == ProbeError("inventory_unreadable", f"{path} {why}.")
    path.write_text("# nothing set yet\n")  # empty is no error: it pins nothing
    empty = read_inventory(inv)
    assert isinstance(empty, InventoryFacts)
    assert (empty.files[0].values, empty.files[0].domain, empty.files[0].eras) == ({}, None, set())


def test_the_inventory_or_its_host_vars_may_be_given(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    (inv / "host_vars" / "h").mkdir(parents=True)
    assert read_inventory(inv) == ProbeError(
        "inventory_unreadable", f"{inv / 'host_vars'} holds no */vars.yml."
    )
    (inv / "host_vars" / "h" / "vars.yml").write_text("matrix_domain: example.org\n")
    for given in (inv, inv / "host_vars"):
        facts = read_inventory(given)
        assert isinstance(facts, InventoryFacts) and facts.path == given
        assert [f.path for f in facts.files] == [inv / "host_vars" / "h" / "vars.yml"]
    for given in (tmp_path, inv / "host_vars" / "h"):
        assert read_inventory(given) == ProbeError(
            "inventory_unreadable",
            f"{given} has no host_vars directory: give the MDAD inventory directory (the one "
            "holding hosts and host_vars/).",
        )
