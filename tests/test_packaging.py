"""What `pip install` brings is what the code imports: no unused dependency, none missing."""

from __future__ import annotations

import ast
import gc
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Distribution name -> the top-level module it provides.
MODULE_OF = {"ruamel.yaml": "ruamel"}


def declared() -> set[str]:
    # Not tomllib: the suite also runs on Python 3.10 (Ubuntu 22.04's system Python).
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert block is not None
    deps = re.findall(r'"([^"]+)"', block.group(1))
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].strip().lower() for d in deps}
    return {MODULE_OF.get(n, n.replace("-", "_")) for n in names}


def imported(package: Path) -> set[str]:
    # Garbage an earlier test left is collected first, not inside ast.parse: on CPython 3.11.7
    # a finalizer that ran while the parser built its tree (an asyncio transport collected
    # after its loop closed) failed the parse with "AST constructor recursion depth mismatch".
    # Such a leak still shows, as pytest's unraisable-exception warning.
    gc.collect()
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != package.name}


def test_declared_dependencies_are_exactly_the_imported_ones() -> None:
    assert declared() == imported(REPO / "bridgedoctor")


def test_readme_installs_into_a_venv_like_helper_md() -> None:
    """`pip install .` fails on Debian 12 / Ubuntu 24.04 (externally managed Python): the README
    gives the venv install that tests/systemd runs with Debian's python3 (docs/helper.md's)."""
    from tests.systemd.mdad_host import sh_blocks

    readme = sh_blocks("## Using it on an MDAD host", (REPO / "README.md").read_text())[0]
    helper_md = sh_blocks("## Install on an MDAD host")[0]
    installs = [c for c in readme if "pip" in c or "venv" in c]
    assert installs and installs == [c for c in helper_md if "pip" in c or "venv" in c]
