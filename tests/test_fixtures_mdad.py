"""Self-tests for tests/fixtures/mdad.py (MDAD-shaped config and unit renderers)."""
# ruff: noqa: E501  (exact URI literals)

from __future__ import annotations

import io

import pytest
from ruamel.yaml import YAML

from tests.fixtures import mdad

BRIDGEV2 = [b for b in mdad.BRIDGES if b not in ("discord", "googlechat")]

# Exact URI forms MDAD (c0681e4) renders, with password "PW".
POSTGRES_URIS = {
    "bluesky": "postgres://matrix_mautrix_bluesky:PW@matrix-postgres:5432/matrix_mautrix_bluesky?sslmode=disable",
    "discord": "postgresql://matrix_mautrix_discord:PW@matrix-postgres:5432/matrix_mautrix_discord?sslmode=disable",
    "gmessages": "postgresql://matrix_mautrix_gmessages:PW@matrix-postgres:5432/matrix_mautrix_gmessages?sslmode=disable",
    "googlechat": "postgres://matrix_mautrix_googlechat:PW@matrix-postgres:5432/matrix_mautrix_googlechat",
    "gvoice": "postgresql://matrix_mautrix_gvoice:PW@matrix-postgres:5432/matrix_mautrix_gvoice?sslmode=disable",
    "linkedin": "postgresql://matrix_mautrix_linkedin:PW@matrix-postgres:5432/matrix_mautrix_linkedin?sslmode=disable",
    "meta-instagram": "postgres://matrix_mautrix_meta_instagram:PW@matrix-postgres:5432/matrix_mautrix_meta_instagram?sslmode=disable",
    "meta-messenger": "postgres://matrix_mautrix_meta_messenger:PW@matrix-postgres:5432/matrix_mautrix_meta_messenger?sslmode=disable",
    "signal": "postgresql://matrix_mautrix_signal:PW@matrix-postgres:5432/matrix_mautrix_signal?sslmode=disable",
    "slack": "postgresql://matrix_mautrix_slack:PW@matrix-postgres:5432/matrix_mautrix_slack?sslmode=disable",
    "telegram": "postgresql://matrix_mautrix_telegram:PW@matrix-postgres:5432/matrix_mautrix_telegram?sslmode=disable",
    "twitter": "postgres://matrix_mautrix_twitter:PW@matrix-postgres:5432/matrix_mautrix_twitter?sslmode=disable",
    "whatsapp": "postgresql://matrix_mautrix_whatsapp:PW@matrix-postgres:5432/matrix_mautrix_whatsapp?sslmode=disable",
}
SQLITE_URIS = {
    "discord": "/data/mautrix-discord.db",
    "gmessages": "/data/mautrix-gmessages.db",
    "googlechat": "sqlite:////data/mautrix-googlechat.db",
    "gvoice": "/data/mautrix-gvoice.db",
    "linkedin": "/data/mautrix-linkedin.db",
    "meta-instagram": "sqlite:////data/mautrix-meta.db",
    "meta-messenger": "sqlite:////data/mautrix-meta.db",
    "signal": "/data/mautrix-signal.db?_txlock=immediate",
    "slack": "/data/mautrix-slack.db",
    "telegram": "/data/mautrix-telegram.db",
    "whatsapp": "/data/mautrix-whatsapp.db",
}
SQLITE_DB_TYPES = {
    "gmessages": "postgres",  # hard-coded in the template
    "gvoice": "postgres",
    "linkedin": "postgres",
    "meta-instagram": "sqlite3-fk-wal",
    "meta-messenger": "sqlite3-fk-wal",
    "signal": "sqlite3-fk-wal",
    "slack": "sqlite3",
    "telegram": "sqlite3-fk-wal",
    "whatsapp": "sqlite3-fk-wal",
}
CONFIG_RO = {
    "bluesky",
    "discord",
    "meta-instagram",
    "meta-messenger",
    "signal",
    "slack",
    "twitter",
}
PORTS = {"bluesky": 29340, "meta-instagram": 29319, "meta-messenger": 29319, "twitter": 29327}
DEFAULT_PICKLE = {
    b: ("maunium.net/go/mautrix-whatsapp" if b in ("slack", "whatsapp") else "mautrix.bridge.e2ee")
    for b in BRIDGEV2
}


def _load(text: str):
    return YAML(typ="safe", pure=True).load(text)


def _keys_sorted(node) -> bool:
    if isinstance(node, dict):
        return list(node) == sorted(node) and all(_keys_sorted(v) for v in node.values())
    if isinstance(node, list):
        return all(_keys_sorted(v) for v in node)
    return True


def test_tables_cover_every_role():
    assert len(mdad.BRIDGES) == 13
    assert set(mdad.PINNED_TAGS) == set(mdad.BRIDGES)
    assert set(mdad.RENAME_TAGS) == set(mdad.BRIDGES) - {"linkedin"}
    assert mdad.PINNED_TAGS["meta-instagram"] == "ig-v0.2608.0"
    assert mdad.RENAME_TAGS["discord"] == "v0.7.6"


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_db_uri_forms(bridge):
    assert mdad.mdad_db_uri(bridge, password="PW") == POSTGRES_URIS[bridge]
    assert mdad.db_name(bridge) == "matrix_mautrix_" + bridge.replace("-", "_")
    if bridge in SQLITE_URIS:
        assert mdad.mdad_db_uri(bridge, engine="sqlite") == SQLITE_URIS[bridge]
        assert SQLITE_URIS[bridge].split("/data/")[1].startswith(mdad.sqlite_filename(bridge))
    else:
        assert mdad.sqlite_filename(bridge) is None
        with pytest.raises(ValueError):
            mdad.mdad_db_uri(bridge, engine="sqlite")


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_config_layout(bridge, engine):
    if engine == "sqlite" and bridge not in SQLITE_URIS:
        pytest.skip("Postgres-only role")
    uri = mdad.mdad_db_uri(bridge, engine=engine, password="PW")
    text = mdad.render_config(bridge, db_uri=uri, domain="example.org")
    cfg = _load(text)
    assert _keys_sorted(cfg), "to_nice_yaml sorts keys"
    assert cfg["homeserver"]["domain"] == "example.org"
    assert cfg["appservice"]["as_token"] == mdad.FAKE_AS_TOKEN
    assert cfg["appservice"]["hs_token"] == mdad.FAKE_HS_TOKEN
    port = PORTS.get(bridge, 8080)
    assert cfg["appservice"]["port"] == port
    assert cfg["appservice"]["address"] == f"http://matrix-mautrix-{bridge}:{port}"

    if bridge in BRIDGEV2:
        assert cfg["database"]["uri"] == uri
        if engine == "postgres":
            assert cfg["database"]["type"] == "postgres"
        else:
            assert cfg["database"]["type"] == SQLITE_DB_TYPES[bridge]
        enc = cfg["encryption"]
        assert enc["pickle_key"] == DEFAULT_PICKLE[bridge]
        assert enc["allow"] is True and enc["default"] is True
        secrets = cfg["double_puppet"]["secrets"]
        assert secrets == {"example.org": "as_token:" + mdad.FAKE_DOUBLE_PUPPET_AS_TOKEN}
        assert "database" not in cfg["appservice"]
    elif bridge == "discord":
        assert cfg["appservice"]["database"]["uri"] == uri
        assert cfg["appservice"]["database"]["type"] == (
            "postgres" if engine == "postgres" else "sqlite3"
        )
        enc = cfg["bridge"]["encryption"]
        assert enc["allow"] is True and enc["default"] is True
        assert "pickle_key" not in enc
        assert "encryption" not in cfg and "database" not in cfg
        assert cfg["bridge"]["login_shared_secret_map"]["example.org"].startswith("as_token:")
    else:  # googlechat
        assert cfg["appservice"]["database"] == uri
        assert cfg["bridge"]["encryption"] == {"allow": True, "default": True}
        assert "encryption" not in cfg and "database" not in cfg
        assert cfg["bridge"]["login_shared_secret"].startswith("as_token:")


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_pickle_key_override(bridge):
    uri = mdad.mdad_db_uri(bridge)
    text = mdad.render_config(bridge, db_uri=uri, pickle_key="go.mau.fi/x", encryption_allow=False)
    cfg = _load(text)
    if bridge in BRIDGEV2:
        assert cfg["encryption"]["pickle_key"] == "go.mau.fi/x"
        assert cfg["encryption"]["allow"] is False
    else:
        assert "go.mau.fi/x" not in text
        assert cfg["bridge"]["encryption"]["allow"] is False


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_unit(bridge, tmp_path):
    root = str(tmp_path / "matrix")
    tag = mdad.PINNED_TAGS[bridge]
    unit = mdad.render_unit(bridge, image_tag=tag, root=root)
    ro = ",ro" if bridge in CONFIG_RO else ""
    assert f"--mount type=bind,src={root}/mautrix-{bridge}/config,dst=/config{ro} \\" in unit
    assert f"--mount type=bind,src={root}/mautrix-{bridge}/data,dst=/data \\" in unit
    image = "dock.mau.dev/mautrix/" + ("meta" if bridge.startswith("meta-") else bridge)
    assert f"\t{image}:{tag} \\\n" in unit
    assert "--no-update" in unit
    container = f"matrix-mautrix-{bridge}"
    assert f"ExecStart=/usr/bin/env docker start --attach {container}\n" in unit
    assert "ExecStop=" in unit and "ExecStartPre=/usr/bin/env docker create \\" in unit
    assert "\nRestart=always\nRestartSec=30\n" in unit
    assert f"SyslogIdentifier={container}\n" in unit
    assert unit.endswith("[Install]\nWantedBy=multi-user.target\n")


def test_write_host(tmp_path):
    root, systemd = tmp_path / "matrix", tmp_path / "systemd"
    for bridge in mdad.BRIDGES:
        cfg_text = mdad.render_config(
            bridge, db_uri=mdad.mdad_db_uri(bridge), as_token="AS-" + bridge, hs_token="HS"
        )
        unit = mdad.render_unit(bridge, image_tag=mdad.PINNED_TAGS[bridge], root=str(root))
        base = mdad.write_host(root, systemd, bridge, config_text=cfg_text, unit_text=unit)
        assert base == root / f"mautrix-{bridge}"
        assert (base / "config" / "config.yaml").read_text() == cfg_text
        assert (base / "data").is_dir()
        reg = _load((base / "config" / "registration.yaml").read_text())
        assert reg["as_token"] == "AS-" + bridge and reg["hs_token"] == "HS"
        assert reg["url"] == _load(cfg_text)["appservice"]["address"]
        assert (systemd / f"matrix-mautrix-{bridge}.service").read_text() == unit
    # unit_text=None: no unit file; broken config text is accepted as-is
    base = mdad.write_host(
        tmp_path / "m2", systemd / "none", "signal", config_text="{broken", unit_text=None
    )
    assert (base / "config" / "config.yaml").read_text() == "{broken"
    assert not (systemd / "none").exists()


def test_to_nice_yaml_matches_pyyaml_quoting():
    text = mdad.to_nice_yaml(
        {"b": ["x", {"k": "on"}], "a": {"z": "*", "y": "12:30", "x": "", "w": None, "v": {}}}
    )
    assert text == (
        "a:\n  v: {}\n  w: null\n  x: ''\n  y: '12:30'\n  z: '*'\nb:\n- x\n- k: 'on'\n"
    )


def test_gmessages_excerpt_exact():
    text = mdad.render_config(
        "gmessages", db_uri=mdad.mdad_db_uri("gmessages", password="PW"), encryption_allow=False
    )
    assert (
        "\nencryption:\n  allow: false\n  allow_key_sharing: false\n  appservice: false\n" in text
    )
    assert "  pickle_key: mautrix.bridge.e2ee\n" in text
    assert "homeserver:\n  address: http://matrix-traefik:8008\n  async_media: true\n" in text
    assert "  permissions:\n    '*': relay\n    example.com: user\n" in text
    assert (
        "logging:\n  min_level: warn\n  writers:\n  - format: pretty\n    type: stdout\n" in text
    )
    buf = io.StringIO(text)
    assert _load(buf)["network"]["device_meta"]["os"] == "mautrix-gmessages"


def test_unknown_bridge():
    with pytest.raises(ValueError):
        mdad.render_config("facebook", db_uri="x")
