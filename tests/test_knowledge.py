"""The knowledge table agrees with what MDAD renders (tests/fixtures/mdad.py, checked against MDAD)."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from bridgedoctor.knowledge import load
from tests.fixtures import mdad

KB = load()


def test_table_covers_exactly_mdads_bridges() -> None:
    assert sorted(KB.bridges) == sorted(mdad.BRIDGES)
    assert "wsproxy" in KB.not_bridges


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_default_key_and_setting_match_the_rendered_config(bridge: str) -> None:
    spec = KB.bridges[bridge]
    cfg = YAML(typ="safe").load(mdad.render_config(bridge, db_uri=mdad.mdad_db_uri(bridge)))
    rendered = (cfg.get("encryption") or {}).get("pickle_key")
    assert rendered == spec.default_key
    assert (spec.key_setting == "extension") == mdad.SPECS[bridge].pickle_key_hardcoded
    if spec.key_setting == "none":
        assert spec.compiled_key and rendered is None


@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_names_derived_from_the_role(bridge: str) -> None:
    spec = KB.bridges[bridge]
    assert spec.rename_tag == mdad.RENAME_TAGS.get(bridge)
    assert spec.db_name == mdad.db_name(bridge)
    assert spec.sqlite_file == (mdad.sqlite_filename(bridge) or spec.sqlite_file)
    assert spec.service in mdad.render_unit(bridge, image_tag="v1")
    assert spec.image in mdad.render_unit(bridge, image_tag="v1")
    assert spec.prefix_current == f"matrix_bridge_mautrix_{bridge.replace('-', '_')}_"


def test_every_historical_key_is_public() -> None:
    for spec in KB.bridges.values():
        assert set(spec.legacy_keys) <= KB.public_keys
