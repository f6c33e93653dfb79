"""The admin's MDAD inventory: what `host_vars/*/vars.yml` pins for each bridge's pickle key.

vars.yml is Ansible input, not plain data: values may be Jinja templates (`"{{ x }}"`), Vault
ciphertext (`!vault`) or `!unsafe` literals, and a later duplicate key wins. So the file is only
*composed* (a node tree, no construction, no alias expansion) and every value of interest is
classified: a literal string can be judged, anything else cannot, and the rules say so.
Only the variables that can set a pickle key are kept; the rest of the file (which holds the
server's secrets) is dropped right here.
"""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from ..facts import InventoryFacts, ProbeError, VarsFile, VarsKind, VarsValue

MAX_VARS_BYTES = 4 * 1024 * 1024
MAX_FILES = 64
CURRENT, LEGACY = "matrix_bridge_mautrix_", "matrix_mautrix_"
KEY_SUFFIXES = ("_bridge_encryption_pickle_key", "_configuration_extension_yaml")
STR_TAG = "tag:yaml.org,2002:str"
# What Ansible's YAML 1.1 reads as a bool, null or number when written plain (unquoted).
YAML11_NOT_STR = re.compile(
    r"(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|~|null|Null|NULL|[-+]?(?:0|[1-9][0-9_]*|0[0-7_]+|0x[0-9a-fA-F_]+)"
    r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?)"
)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def classify(node: Node, line: int | None = None) -> VarsValue:
    at = node.start_mark.line + 1 if line is None else line
    if not isinstance(node, ScalarNode):
        return VarsValue("other", "", at)
    text = str(node.value)
    if node.tag == "!vault":
        return VarsValue("vault", "", at)
    if node.tag == "!unsafe":  # Ansible never templates it: the text is the value
        return VarsValue("literal", text, at)
    if node.tag != STR_TAG or (node.style is None and YAML11_NOT_STR.fullmatch(text)):
        return VarsValue("other", "", at)
    kind: VarsKind = "template" if is_template(text) else "literal"
    return VarsValue(kind, text, at)


def _child(node: Node | None, key: str) -> Node | None:
    found = None
    for k, v in top_level(node):
        if k == key:
            found = v  # the last one wins, as in Ansible
    return found


def extension_key(node: Node) -> VarsValue | None:
    """encryption.pickle_key inside a *_configuration_extension_yaml value (a YAML text that
    MDAD templates, parses and merges over the bridge's config), or None if it sets none."""
    at = node.start_mark.line + 1
    outer = classify(node)
    if outer.kind in ("vault", "other"):
        return outer
    if "{%" in outer.text:  # Jinja control blocks can change the structure itself
        return VarsValue("unparsable", "", at)
    try:
        tree = compose(outer.text)
    except (YAMLError, RecursionError):
        return VarsValue("unparsable", "", at)
    key = _child(_child(tree, "encryption"), "pickle_key")
    return None if key is None else classify(key, at)


def compose(text: str) -> Node | None:
    """The node tree of a YAML text (raises YAMLError or RecursionError on bad input)."""
    return YAML(typ="safe", pure=True).compose(text)


def top_level(root: Node | None) -> list[tuple[str, Node]]:
    """(key, value node) pairs of a top-level mapping, in order (so a later duplicate wins)."""
    if not isinstance(root, MappingNode):
        return []
    return [(str(k.value), v) for k, v in root.value if isinstance(k, ScalarNode)]


def _vars_file(path: Path) -> VarsFile | ProbeError:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_VARS_BYTES + 1)
    except OSError as e:
        return ProbeError("inventory_unreadable", f"{path} cannot be read ({e.strerror}).")
    if len(raw) > MAX_VARS_BYTES:
        return ProbeError("inventory_unreadable", f"{path} is larger than 4 MiB.")
    try:
        root = compose(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return ProbeError("inventory_unreadable", f"{path} is not UTF-8 text.")
    except (YAMLError, RecursionError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return ProbeError("inventory_unreadable", f"{path} is not valid YAML{where}.")
    if root is not None and not isinstance(root, MappingNode):
        return ProbeError("inventory_unreadable", f"{path} does not hold a YAML mapping.")
    values: dict[str, VarsValue] = {}
    eras: set[str] = set()
    domain = None
    for key, node in top_level(root):
        if key == "matrix_domain":
            domain = classify(node)
        if key.startswith(CURRENT):
            eras.add("current")
        elif key.startswith(LEGACY):
            eras.add("legacy")
        else:
            continue
        if key.endswith(KEY_SUFFIXES[0]):
            values[key] = classify(node)
        elif key.endswith(KEY_SUFFIXES[1]):
            found = extension_key(node)
            if found is None:
                values.pop(key, None)
            else:
                values[key] = found
    return VarsFile(path, domain, values, frozenset(eras))


def host_vars_dir(inventory: Path) -> Path | None:
    if (inventory / "host_vars").is_dir():
        return inventory / "host_vars"
    if inventory.name == "host_vars" and inventory.is_dir():
        return inventory
    return None


def read_inventory(inventory: Path) -> InventoryFacts | ProbeError:
    """Every `host_vars/*/vars.yml` of an MDAD inventory directory (or of its host_vars/)."""
    host_vars = host_vars_dir(inventory)
    if host_vars is None:
        return ProbeError(
            "inventory_unreadable",
            f"{inventory} has no host_vars directory: give the MDAD inventory directory (the "
            "one holding hosts and host_vars/).",
        )
    paths = sorted(host_vars.glob("*/vars.yml"))[:MAX_FILES]
    if not paths:
        return ProbeError("inventory_unreadable", f"{host_vars} holds no */vars.yml.")
    files: list[VarsFile] = []
    for path in paths:
        parsed = _vars_file(path)
        if isinstance(parsed, ProbeError):
            return parsed
        files.append(parsed)
    return InventoryFacts(inventory, tuple(files))
