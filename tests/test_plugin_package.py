"""The .mbp: metadata, config keys, and that it loads in a maubot without bridgedoctor installed."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import bridgedoctor
from bridgedoctor_maubot.config import KEYS

REPO = Path(__file__).resolve().parents[1]


def _yaml(path: Path) -> dict:
    return dict(YAML(typ="safe").load(path.read_text()))


def test_metadata() -> None:
    meta = _yaml(REPO / "maubot.yaml")
    assert meta["version"] == bridgedoctor.__version__
    assert meta["modules"] == ["bridgedoctor", "bridgedoctor_maubot"]
    assert meta["main_class"] == "bridgedoctor_maubot/BridgeDoctorPlugin"
    assert meta["config"] is True
    # The watch's statuses and open plans live in maubot's instance database; only the
    # asyncpg-style interface is available without SQLAlchemy (knowledge/maubot.md §1.1).
    assert meta["database"] is True and meta["database_type"] == "asyncpg"
    assert meta["dependencies"] == [] and "base-config.yaml" in meta["extra_files"]


def test_base_config_has_every_key_copied() -> None:
    base = _yaml(REPO / "base-config.yaml")
    flat = {f"{k}.{s}" for k, v in base.items() if isinstance(v, dict) for s in v}
    flat |= {k for k, v in base.items() if not isinstance(v, dict)}
    assert flat == set(KEYS)
    assert base["socket_path"] == "/run/bridgedoctor/helper.sock"
    assert base["token"] == "" and base["admins"] == [] and base["allowed_rooms"] == []


@pytest.fixture(scope="module")
def mbp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-mbp.sh"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == out / f"dev.bridgedoctor.plugin-v{bridgedoctor.__version__}.mbp"
    return path


def test_mbp_ships_only_the_stdlib_part_of_bridgedoctor(mbp: Path) -> None:
    names = set(zipfile.ZipFile(mbp).namelist())
    core = {n for n in names if n.startswith("bridgedoctor/")}
    assert core == {
        "bridgedoctor/__init__.py",
        "bridgedoctor/protocol.py",
        "bridgedoctor/render/__init__.py",
        "bridgedoctor/render/matrix.py",
        "bridgedoctor/render/matrix_apply.py",
        "bridgedoctor/render/matrix_reset.py",
        "bridgedoctor/render/matrix_watch.py",
        "bridgedoctor/render/neutral.py",
    }
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "base-config.yaml" in names


# Loads the plugin the way maubot's server does, in an interpreter whose site-packages is on the
# path but whose .pth files (the editable bridgedoctor install) are not processed.
_LOADER = """
import importlib.util, json, sys
sys.path.append(sys.argv[2])
assert importlib.util.find_spec("bridgedoctor") is None, "bridgedoctor is importable"
before = set(sys.modules)
from maubot.loader.zip import ZippedPluginLoader
cls = ZippedPluginLoader(sys.argv[1])._load()
print(json.dumps({
    "class": cls.__name__,
    "ours": sorted(m for m in sys.modules if m.startswith("bridgedoctor")),
    "files": sorted({sys.modules[m].__file__.split(".mbp")[0] + ".mbp"
                     for m in sys.modules if m.startswith("bridgedoctor")}),
}))
"""


def test_mbp_loads_without_bridgedoctor_installed(mbp: Path, tmp_path: Path) -> None:
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", _LOADER, str(mbp), site],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["class"] == "BridgeDoctorPlugin"
    assert out["files"] == [str(mbp)]
    assert out["ours"] == [
        "bridgedoctor",
        "bridgedoctor.protocol",
        "bridgedoctor.render",
        "bridgedoctor.render.matrix",
        "bridgedoctor.render.matrix_apply",
        "bridgedoctor.render.matrix_reset",
        "bridgedoctor.render.matrix_watch",
        "bridgedoctor.render.neutral",
        "bridgedoctor_maubot",
        "bridgedoctor_maubot.bot",
        "bridgedoctor_maubot.commands",
        "bridgedoctor_maubot.config",
        "bridgedoctor_maubot.followup",
        "bridgedoctor_maubot.helper_client",
        "bridgedoctor_maubot.invocation",
        "bridgedoctor_maubot.migrations",
        "bridgedoctor_maubot.pending",
        "bridgedoctor_maubot.replies",
        "bridgedoctor_maubot.resets",
        "bridgedoctor_maubot.store",
        "bridgedoctor_maubot.watch",
    ]
