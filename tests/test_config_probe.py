"""probes/config.py and probes/registration.py: what is read from a bridge's config.yaml and
registration.yaml (MDAD's three layouts), and from Synapse's homeserver.yaml, field by field."""

from __future__ import annotations

import os
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bridgedoctor.facts import (
    AppserviceFacts,
    ConfigFacts,
    HomeserverFacts,
    ProbeError,
    RegistrationFacts,
    ServiceFacts,
)
from bridgedoctor.pickle import fingerprint
from bridgedoctor.probes.config import read_config
from bridgedoctor.probes.host import reroot
from bridgedoctor.probes.registration import (
    container_path,
    read_homeserver,
    read_registration,
)
from tests.fixtures import mdad

URI = "postgres://bridge:s3cret@matrix-postgres:5432/matrix_mautrix_x?sslmode=disable"


def dump(tree: Any) -> str:
    """YAML text of a tree, keys in their order (ruamel: the YAML library the project ships)."""
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = StringIO()
    y.dump(tree, out)
    return out.getvalue()


def write(tmp_path: Path, tree: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(tree if isinstance(tree, str) else dump(tree))
    return path


def appservice(bridge: str) -> AppserviceFacts:
    return AppserviceFacts(
        id=bridge,
        address=f"http://matrix-mautrix-{bridge}:8080",
        as_token=fingerprint(mdad.FAKE_AS_TOKEN),
        hs_token=fingerprint(mdad.FAKE_HS_TOKEN),
    )


@pytest.mark.parametrize(
    ("bridge", "expected"),
    [
        (
            "whatsapp",
            {"layout": "bridgev2", "pickle_key": mdad.LEGACY_WHATSAPP_KEY, "db_type": "postgres",
             "msc4190": True, "self_sign": True, "double_puppet": (("ex.org", "as_token"),)},
        ),
        (
            "discord",
            {"layout": "legacy-go", "pickle_key": None, "db_type": "postgres", "msc4190": True,
             "self_sign": None, "double_puppet": ()},
        ),
        (
            "googlechat",
            {"layout": "python", "pickle_key": None, "db_type": None, "msc4190": None,
             "self_sign": None, "double_puppet": ()},
        ),
    ],
)  # fmt: skip
def test_each_mdad_layout_is_read_field_by_field(
    tmp_path: Path, bridge: str, expected: dict[str, Any]
) -> None:
    path = write(tmp_path, mdad.render_config(bridge, db_uri=URI, msc4190=True, domain="ex.org"))
    facts = read_config(path)
    assert facts == ConfigFacts(
        path=path,
        encryption_allow=True,
        db_uri=URI,
        homeserver_domain="ex.org",
        appservice=appservice(bridge),
        homeserver_address=mdad.DEFAULT_HOMESERVER_ADDRESS,
        **expected,
    )
    assert isinstance(facts, ConfigFacts)
    # Not compared by ConfigFacts' equality: the secrets a log line could echo.
    assert {mdad.FAKE_AS_TOKEN, mdad.FAKE_HS_TOKEN, "s3cret"} <= set(facts.secret_values)
    off = read_config(
        write(tmp_path, mdad.render_config(bridge, db_uri=URI, encryption_allow=False))
    )
    assert isinstance(off, ConfigFacts) and off.encryption_allow is False


def test_every_secret_a_log_line_could_echo_is_collected(tmp_path: Path) -> None:
    tree = {
        "homeserver": {"domain": "ex.org", "address": "https://hs.ex.org"},
        "appservice": {"id": "x", "address": "http://x:1", "as_token": "as-1", "hs_token": "hs-2"},
        "provisioning": {"shared_secret": "prov-3"},
        "bridge": {
            "provisioning": {"shared_secret": "prov-4"},
            "login_shared_secret": "as_token:login-5",
            "login_shared_secret_map": {"ex.org": "as_token:map-6", "other": 7, "b": "map-8"},
        },
        "public_media": {"signing_key": "media-9"},
        "direct_media": {"server_key": "direct-10"},
        "encryption": {"pickle_key": "pickle-11", "allow": True},
        "double_puppet": {
            "secrets": {"ex.org": "as_token:dp-12", "c.org": "dp-13", "d": None, "e": 5, "f": ""}
        },
        "database": {"type": "postgres", "uri": "postgres://u:pw-14:colon@db/x"},
        "env_config_prefix": "MAUTRIX_X_",
    }
    facts = read_config(write(tmp_path, tree))
    assert isinstance(facts, ConfigFacts)
    assert facts.secret_values == (
        "as-1", "hs-2", "prov-3", "prov-4", "login-5", "media-9", "direct-10", "pickle-11",
        "dp-12", "dp-13", "map-6", "map-8", "pw-14:colon",
    )  # fmt: skip
    assert facts.double_puppet == (
        ("ex.org", "as_token"),
        ("c.org", "shared_secret"),
        ("d", "empty"),
        ("e", "empty"),
        ("f", "empty"),
    )
    assert facts.env_config_prefix == "MAUTRIX_X_"
    assert facts.homeserver_address == "https://hs.ex.org"
    # The python layout's URI string, and the legacy layout's mapping, hold passwords too.
    for db in ("postgres://u:pw-15@db/x", {"type": "postgres", "uri": "postgres://u:pw-15@db/x"}):
        legacy = read_config(write(tmp_path, {"appservice": {"database": db, "as_token": ""}}))
        assert isinstance(legacy, ConfigFacts)
        assert legacy.secret_values == ("pw-15",)
    # A password holding '@' and '://' unencoded: everything between the first '://' and the
    # last '@', after the first ':'.
    odd = read_config(
        write(tmp_path, {"database": {"uri": "postgres://u:a://b@c@d@host/db"}, "appservice": {}})
    )
    assert isinstance(odd, ConfigFacts) and odd.secret_values == ("a://b@c@d",)
    # A percent-encoded password, as written and as the driver sends it (an error may echo
    # either); once when both are the same.
    encoded = read_config(
        write(tmp_path, {"database": {"uri": "postgres://u:p%40ss%3Aw0rd@db/x"}, "appservice": {}})
    )
    assert isinstance(encoded, ConfigFacts)
    assert encoded.secret_values == ("p%40ss%3Aw0rd", "p@ss:w0rd")
    # The words that switch a setting off or ask for a new value are not secrets.
    words = read_config(
        write(tmp_path, {"provisioning": {"shared_secret": "disable"},
                         "encryption": {"pickle_key": "generate"},
                         "database": {"uri": "postgres://u@db/x"}, "appservice": {}})
    )  # fmt: skip
    assert isinstance(words, ConfigFacts) and words.secret_values == ()
    # A URI without a password, or without credentials at all, adds nothing; nor do empty values.
    for uri in ("postgres://u@db/x", "postgres://db/x", "/data/x.db", "sqlite:x@y"):
        plain = read_config(
            write(tmp_path, {"database": {"uri": uri}, "appservice": {"as_token": ""}})
        )
        assert isinstance(plain, ConfigFacts) and plain.secret_values == (), uri


@pytest.mark.parametrize(
    ("tree", "facts"),
    [
        # bridgev2 without a pickle key (or a non-string one) upgrades it to "generate".
        ({"database": {"uri": "/data/x.db"}}, {"pickle_key": "generate", "db_type": ""}),
        (
            {"database": {"uri": "/data/x.db", "type": "sqlite3-fk-wal"},
             "encryption": {"pickle_key": 5, "msc4190": "yes", "self_sign": 1, "allow": 1}},
            {"pickle_key": "generate", "db_type": "sqlite3-fk-wal", "msc4190": None,
             "self_sign": None, "encryption_allow": True},
        ),
        (
            {"database": {"uri": "/data/x.db"}, "encryption": {"pickle_key": "k", "msc4190": False,
             "self_sign": True}, "env_config_prefix": "", "double_puppet": {"secrets": ["x"]}},
            {"pickle_key": "k", "msc4190": False, "self_sign": True, "env_config_prefix": None},
        ),
        # A prefix is shown on one line, bounded.
        (
            {"database": {"uri": "/data/x.db"}, "env_config_prefix": "A\nB" + "C" * 100},
            {"env_config_prefix": "A\\x0aB" + "C" * 55 + "..."},
        ),
        ({"database": {"uri": "/data/x.db"}, "env_config_prefix": 5}, {"env_config_prefix": None}),
        # Non-string or empty identity fields are not facts.
        (
            {"database": {"uri": "/data/x.db"}, "homeserver": {"domain": "", "address": 5},
             "appservice": {"id": "", "address": None, "as_token": 5, "hs_token": ""}},
            {"homeserver_domain": None, "homeserver_address": None,
             "appservice": AppserviceFacts(None, None, None, None)},
        ),
        (
            {"database": {"uri": "/data/x.db"}, "homeserver": "ex.org", "appservice": ["x"]},
            {"homeserver_domain": None, "appservice": AppserviceFacts(None, None, None, None)},
        ),
        # legacy-go: the type is optional; msc4190 lives under bridge.encryption.
        (
            {"appservice": {"database": {"uri": "u"}}, "bridge": {"encryption": {"allow": True,
             "msc4190": True}}, "encryption": {"allow": False, "msc4190": False}},
            {"layout": "legacy-go", "pickle_key": None, "db_type": "", "db_uri": "u",
             "encryption_allow": True, "msc4190": True},
        ),
        (
            {"appservice": {"database": "u"}, "bridge": {"encryption": {"allow": True}},
             "encryption": {"allow": False}},
            {"layout": "python", "pickle_key": None, "db_type": None, "db_uri": "u",
             "encryption_allow": True},
        ),
    ],
)  # fmt: skip
def test_odd_values_in_each_layout(tmp_path: Path, tree: dict, facts: dict[str, Any]) -> None:
    path = write(tmp_path, tree)
    got = read_config(path)
    assert isinstance(got, ConfigFacts)
    defaults = {"layout": "bridgev2", "encryption_allow": False, "db_uri": "/data/x.db",
                "appservice": AppserviceFacts(None, None, None, None)}  # fmt: skip
    for key, value in {**defaults, **facts}.items():
        assert getattr(got, key) == value, key


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- a\n- list\n", "does not hold a YAML mapping"),
        ("appservice:\n  database:\n    type: postgres\n", "has no appservice.database.uri"),
        ("appservice:\n  database:\n    uri: 5\n", "has no appservice.database.uri"),
        ("database:\n  uri: 5\n", "has no database URI"),
        ("database: postgres://x\n", "has no database URI"),
    ],
)
def test_a_config_without_a_database_uri_is_unreadable(
    tmp_path: Path, text: str, needle: str
) -> None:
    got = read_config(write(tmp_path, text))
    assert isinstance(got, ProbeError) and got.code == "config_unreadable"
    assert needle in got.message


@pytest.mark.parametrize("name", ["config.yaml", "registration.yaml"])
def test_the_files_are_read_from_the_bridge_directory_down(tmp_path: Path, name: str) -> None:
    """A config directory that is a link (the bridge can write its parent... or an admin's
    mistake) is refused when the walk starts at the bridge directory, as the probes are told."""
    base = tmp_path / "mautrix-x"
    base.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere, mdad.render_registration("whatsapp"), name)
    (base / "config").symlink_to(elsewhere)
    read = read_config if name == "config.yaml" else read_registration
    got = read(base / "config" / name, base)
    assert isinstance(got, ProbeError) and got.code == f"{name.split('.')[0]}_refused"
    assert f"{base / 'config'} is a symbolic link" in got.message


# --- registration.yaml and homeserver.yaml -------------------------------------------------------


def test_an_mdad_registration_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, mdad.render_registration("whatsapp", msc4190=True), "registration.yaml")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert read_registration(path) == RegistrationFacts(
        path=path,
        appservice=appservice("whatsapp"),
        msc4190=True,
        mtime=1_700_000_000.0,
    )
    python = write(tmp_path, mdad.render_registration("googlechat"), "registration.yaml")
    got = read_registration(python)
    assert isinstance(got, RegistrationFacts) and got.msc4190 is None
    assert got.appservice == appservice("googlechat")


def test_a_registration_that_is_not_a_mapping_or_too_big(tmp_path: Path) -> None:
    got = read_registration(write(tmp_path, "- x\n", "registration.yaml"))
    assert isinstance(got, ProbeError) and got.code == "registration_unreadable"
    assert "does not hold a YAML mapping" in got.message
    big = write(tmp_path, "a: " + "x" * (256 * 1024) + "\n", "registration.yaml")
    got = read_registration(big)
    assert isinstance(got, ProbeError) and got.code == "registration_refused"
    assert "larger than 256 KiB" in got.message
    got = read_registration(tmp_path / "none.yaml")
    assert isinstance(got, ProbeError) and got.code == "registration_missing"
    odd = read_registration(write(tmp_path, {"io.element.msc4190": "yes"}, "registration.yaml"))
    assert isinstance(odd, RegistrationFacts) and odd.msc4190 is None


def synapse(tmp_path: Path, text: str | None, unit: str | None = None) -> tuple[Path, Path]:
    root, systemd = tmp_path / "matrix", tmp_path / "systemd"
    (root / "synapse" / "config").mkdir(parents=True)
    systemd.mkdir()
    if text is not None:
        (root / "synapse" / "config" / "homeserver.yaml").write_text(text)
    if unit is not None:
        (systemd / "matrix-synapse.service").write_text(unit)
    return root, systemd


def service(active: str, sub: str, age: float | None) -> ServiceFacts:
    return ServiceFacts(
        unit="matrix-synapse.service", load_state="loaded", active_state=active, sub_state=sub,
        result="success", exit_code="", exit_status=None, restarts=0, main_start_mono=1,
        active_enter_mono=1, age=age,
    )  # fmt: skip


UNIT = (
    "[Service]\nExecStart=/usr/bin/env docker run --rm --name matrix-synapse "
    "--mount type=bind,src=/matrix/mautrix-whatsapp/bridge/registration.yaml,"
    "dst=/matrix-mautrix-whatsapp-registration.yaml,ro "
    "ghcr.io/element-hq/synapse:v1.120.0\n"
)


def test_synapse_lists_its_registrations_and_their_mounts(tmp_path: Path) -> None:
    files = ["/matrix-mautrix-whatsapp-registration.yaml", 5, "/matrix-x-registration.yaml"]
    root, systemd = synapse(tmp_path, dump({"app_service_config_files": files}), UNIT)
    running = service("active", "running", 100.0)
    before = time.time()
    got = read_homeserver(root, systemd, running)
    assert isinstance(got, HomeserverFacts)
    assert got.config == root / "synapse" / "config" / "homeserver.yaml"
    assert got.app_service_files == (
        container_path("mautrix-whatsapp"),
        "/matrix-x-registration.yaml",
    )
    assert got.mounts == {
        container_path("mautrix-whatsapp"): reroot(
            "/matrix/mautrix-whatsapp/bridge/registration.yaml", root
        )
    }
    assert got.started_at is not None
    assert before - 100.0 - 1 <= got.started_at <= time.time() - 100.0
    # Not running, or its age unknown: no start time; no unit file: no mounts.
    for other in (None, service("inactive", "dead", 100.0), service("active", "running", None)):
        got = read_homeserver(root, systemd, other)
        assert isinstance(got, HomeserverFacts) and got.started_at is None
    (systemd / "matrix-synapse.service").unlink()
    got = read_homeserver(root, systemd)
    assert isinstance(got, HomeserverFacts) and got.mounts == {}


def test_a_homeserver_config_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    root, systemd = synapse(tmp_path, None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "homeserver.yaml").write_text("app_service_config_files: []\n")
    (root / "synapse" / "config").rmdir()
    (root / "synapse" / "config").symlink_to(elsewhere)
    got = read_homeserver(root, systemd)
    assert isinstance(got, ProbeError) and got.code == "homeserver_refused"
    assert f"{root / 'synapse' / 'config'} is a symbolic link" in got.message


def test_a_homeserver_config_odd_or_absent(tmp_path: Path) -> None:
    root, systemd = synapse(tmp_path, None)
    assert read_homeserver(root, systemd) is None  # no MDAD Synapse on this host
    (root / "synapse" / "config" / "homeserver.yaml").symlink_to(tmp_path / "nowhere")
    got = read_homeserver(root, systemd)  # a dangling link is there, and refused
    assert isinstance(got, ProbeError) and got.code == "homeserver_refused"
    (root / "synapse" / "config" / "homeserver.yaml").unlink()
    for text, files in (("app_service_config_files: x\n", ()), ("{}\n", ())):
        (root / "synapse" / "config" / "homeserver.yaml").write_text(text)
        got = read_homeserver(root, systemd)
        assert isinstance(got, HomeserverFacts) and got.app_service_files == files
    (root / "synapse" / "config" / "homeserver.yaml").write_text("- x\n")
    got = read_homeserver(root, systemd)
    assert isinstance(got, ProbeError) and got.code == "homeserver_unreadable"
    assert "does not hold a YAML mapping" in got.message
    # Up to 4 MiB is read (homeserver.yaml holds more than a bridge's config), not more.
    (root / "synapse" / "config" / "homeserver.yaml").write_text(
        "a: " + "x" * (3 * 1024 * 1024) + "\n"
    )
    assert isinstance(read_homeserver(root, systemd), HomeserverFacts)
    (root / "synapse" / "config" / "homeserver.yaml").write_text(
        "a: " + "x" * (4 * 1024 * 1024) + "\n"
    )
    got = read_homeserver(root, systemd)
    assert isinstance(got, ProbeError) and got.code == "homeserver_refused"


# ---- host.py: the bridges found under a root, and what their units say ------------------------
def test_reroot_maps_only_paths_under_matrix(tmp_path: Path) -> None:
    assert reroot("/matrix/mautrix-x/config", tmp_path) == tmp_path / "mautrix-x" / "config"
    assert reroot("/matrix", tmp_path) == tmp_path
    assert reroot("/matrixfoo/x", tmp_path) == Path("/matrixfoo/x")
    assert reroot("/srv/x", tmp_path) == Path("/srv/x")


def test_a_bridge_is_found_by_its_config_or_its_unit(tmp_path: Path) -> None:
    from bridgedoctor.knowledge import load
    from bridgedoctor.probes.host import discover

    kb = load()
    root, units = tmp_path / "matrix", tmp_path / "systemd"
    units.mkdir()
    (root / "mautrix-whatsapp" / "config").mkdir(parents=True)
    (root / "mautrix-whatsapp" / "config" / "config.yaml").write_text("x: 1\n")
    (units / "matrix-mautrix-signal.service").write_text("[Unit]\n")
    # Neither a config.yaml that is a directory nor a unit that is one counts.
    (root / "mautrix-discord" / "config" / "config.yaml").mkdir(parents=True)
    (units / "matrix-mautrix-slack.service").mkdir()
    (root / "mautrix-telegram").mkdir()
    found = discover(root, units, kb)
    assert found == [name for name in kb.bridges if name in ("whatsapp", "signal")]
    assert discover(tmp_path / "nothing", tmp_path / "none", kb) == []


def _unit_facts(tmp_path: Path, text: str | bytes) -> Any:
    from bridgedoctor.probes.host import read_unit

    unit = tmp_path / "x.service"
    if isinstance(text, bytes):
        unit.write_bytes(text)
    else:
        unit.write_text(text)
    return read_unit(unit, tmp_path / "root")


def test_an_mdad_unit_is_read_field_by_field(tmp_path: Path) -> None:
    from bridgedoctor.facts import UnitFacts

    root = tmp_path / "root"
    got = _unit_facts(tmp_path, mdad.render_unit("whatsapp", image_tag="v0.11.1"))
    assert got == UnitFacts(
        path=tmp_path / "x.service",
        image="dock.mau.dev/mautrix/whatsapp",
        tag="v0.11.1",
        config_dir=root / "mautrix-whatsapp" / "config",
        data_dir=root / "mautrix-whatsapp" / "data",
        config_read_only=False,
        no_update=True,
        mounts=(
            ("/config", root / "mautrix-whatsapp" / "config"),
            ("/data", root / "mautrix-whatsapp" / "data"),
        ),
    )
    ro = _unit_facts(tmp_path, mdad.render_unit("bluesky", image_tag="v1", root="/srv/m"))
    assert (ro.config_dir, ro.config_read_only, ro.data_dir) == (
        Path("/srv/m/mautrix-bluesky/config"),
        True,
        Path("/srv/m/mautrix-bluesky/data"),
    )


def test_a_hand_written_unit_with_quotes_a_registry_port_and_more_mounts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    got = _unit_facts(
        tmp_path,
        "[Service]\n"
        "ExecStartPre=/usr/bin/docker pull 'reg.example:5000/other:latest'\n"
        "ExecStartPre=/usr/bin/docker create --rm --user=1:1 \\\n"
        "  --env HS=http://synapse:8008/_matrix --env=X=a:b/c \\\n"
        "  --mount type=bind,src=/matrix/x/extra,dst=/extra,ro \\\n"
        "  --mount type=bind,src=/srv/x/data,dst=/data \\\n"
        "  --mount type=bind,src=/matrix/x/cfg,dst=/config,ro \\\n"
        "  'reg.example:5000/mautrix/what'\"sapp\":v\\2 \\\n"
        "  /usr/bin/mautrix-whatsapp --listen http://0.0.0.0:29318\n"
        "ExecStart=/usr/bin/docker start --attach x\n",
    )
    assert (got.image, got.tag, got.no_update) == (
        "reg.example:5000/mautrix/whatsapp",
        "v2",
        False,
    )
    assert (got.config_dir, got.config_read_only, got.data_dir) == (
        root / "x" / "cfg",
        True,
        Path("/srv/x/data"),
    )
    assert got.mounts == (
        ("/extra", root / "x" / "extra"),
        ("/data", Path("/srv/x/data")),
        ("/config", root / "x" / "cfg"),
    )


@pytest.mark.parametrize(
    "line",
    [
        "  docker create img.example/a/b:v3 \\\n  --no-update\n",  # not an ExecStart= line
        "ExecStartPre=/usr/bin/env docker create\timg.example/a/b:v3\n".replace("\t", " "),
    ],
)
def test_the_image_is_read_from_any_docker_create_line(tmp_path: Path, line: str) -> None:
    got = _unit_facts(tmp_path, "[Service]\n" + line)
    assert (got.image, got.tag) == ("img.example/a/b", "v3")


@pytest.mark.parametrize(
    "line",
    [
        "ExecStart=/usr/bin/env docker run img.example/a/b:v3\n",  # not a create
        "ExecStart=/usr/bin/env podman create img.example/a/b:v3\n",  # not docker
        "ExecStartPre=/usr/bin/env docker-create img.example/a/b:v3\n",
        "ExecStart=/usr/bin/env docker create --image=img.example/a/b:v3 plain:v3\n",
        # Untagged (a registry with a port): no tag to compare, so no image either.
        "ExecStart=/usr/bin/env docker create reg.example:5000/a/b /usr/bin/b\n",
    ],
)
def test_no_image_without_a_docker_create(tmp_path: Path, line: str) -> None:
    from bridgedoctor.facts import UnitFacts

    assert _unit_facts(tmp_path, "[Service]\n" + line) == UnitFacts(path=tmp_path / "x.service")


SHA = "sha256:" + "0123456789abcdef" * 4


def test_an_mdad_unit_pinning_a_digest_is_read_field_by_field(tmp_path: Path) -> None:
    """A version pinned as `tag@digest` in vars.yml: MDAD writes `image:tag@sha256:...`."""
    got = _unit_facts(tmp_path, mdad.render_unit("gmessages", image_tag=f"v0.2608.0@{SHA}"))
    assert (got.image, got.tag, got.digest) == ("dock.mau.dev/mautrix/gmessages", "v0.2608.0", SHA)
    assert got.config_dir == tmp_path / "root" / "mautrix-gmessages" / "config"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            f"docker.io/dock.mau.dev/mautrix/gmessages@{SHA}",
            ("docker.io/dock.mau.dev/mautrix/gmessages", None, SHA),
        ),
        (f"reg.example:5000/a/b:v3@{SHA}", ("reg.example:5000/a/b", "v3", SHA)),
        (f"reg.example:5000/a/b@{SHA}", ("reg.example:5000/a/b", None, SHA)),
        ("reg.example:5000/a/b:v3", ("reg.example:5000/a/b", "v3", None)),
        ("a/b@sha512:" + "f" * 128, ("a/b", None, "sha512:" + "f" * 128)),
    ],
)
def test_an_image_pinned_by_tag_digest_or_both(
    tmp_path: Path, image: str, expected: tuple
) -> None:
    got = _unit_facts(
        tmp_path,
        "[Service]\nExecStartPre=/usr/bin/env docker create --rm --env URL=http://h:80/a:b "
        f"{image} /usr/bin/b --x y/z:1\n",
    )
    assert (got.image, got.tag, got.digest) == expected


@pytest.mark.parametrize(
    "word",
    [
        "a/b@latest",  # not a digest
        "a/b@sha256:",  # no digest value
        "a/b@SHA256:abc",  # the algorithm is lower case
        "a/b@sha256:ab/c",
        "a/b:",  # an empty tag
        "reg.example:5000/a/b",  # untagged: the port is no tag
        "x=y/a:b",  # an assignment, not an image
        "ab@sha256:" + "0" * 64,  # no path
    ],
)
def test_words_that_are_no_pinned_image(word: str) -> None:
    from bridgedoctor.probes.host import image_reference

    assert image_reference(word) is None


def test_a_unit_that_cannot_be_read_or_is_not_utf8(tmp_path: Path) -> None:
    from bridgedoctor.probes.host import read_unit

    assert read_unit(tmp_path / "absent.service", tmp_path) is None
    assert read_unit(tmp_path, tmp_path) is None  # a directory
    got = _unit_facts(tmp_path, b"ExecStart=docker create r\xffg.example/a/b:v1\n")
    assert (got.image, got.tag) == ("r\ufffdg.example/a/b", "v1")
