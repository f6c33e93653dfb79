"""Change encryption.pickle_key in config.yaml text and nothing else, then prove it.

The value is replaced where the YAML parser says it is (the scalar node's start and end marks),
not by dumping a round-tripped document: a dump may re-wrap long lines, re-quote or re-indent
elsewhere, and an admin's (or MDAD's) formatting and comments must survive byte for byte. Then
two checks: the bytes before and after the value are identical, and the whole document parses to
the same data except that one value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from ..probes.bridgefile import Refused, parse_yaml
from ..probes.inventory import YAML11_NOT_STR
from .errors import ApplyError

PATH = ("encryption", "pickle_key")


@dataclass(frozen=True)
class Edit:
    text: str = field(repr=False)  # the new document (holds the key)
    old: str = field(repr=False)  # the value that was there
    start: int  # byte offsets of the replaced value in the old document
    end: int


def _double(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar, escapes included (as in fixes.py).
    return json.dumps(value, ensure_ascii=False)


def _as_plain(value: str) -> str | None:
    """`value` written plain, if it reads back as exactly that string in YAML 1.1 and 1.2."""
    if not value or not value.isprintable() or YAML11_NOT_STR.fullmatch(value):
        return None
    try:
        node = YAML(typ="safe", pure=True).compose(f"k: {value}\n")
    except YAMLError:
        return None
    found = node.value[0][1] if isinstance(node, MappingNode) and node.value else None
    ok = isinstance(found, ScalarNode) and found.style is None and found.value == value
    return value if ok and found.tag == "tag:yaml.org,2002:str" else None


def render_like(style: str | None, value: str) -> str:
    """`value` as a YAML scalar in the style the old one had, where that style can hold it."""
    if style is None and (plain := _as_plain(value)) is not None:
        return plain
    if style == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return _double(value)


def _only(node: Node | None, key: str, parent: str = "") -> Node:
    name = f"{parent}.{key}" if parent else key
    found = []
    if isinstance(node, MappingNode):
        found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
    if not found:
        raise ApplyError(f"config.yaml has no {name}")
    if len(found) > 1:
        raise ApplyError(f"config.yaml sets {name} {len(found)} times")
    return found[0]


def locate(text: str) -> tuple[ScalarNode, int, int]:
    """The pickle_key scalar and its character span, or ApplyError saying why it cannot be
    edited safely."""
    try:
        root = YAML(typ="safe", pure=True).compose(text)
    except (YAMLError, RecursionError):
        raise ApplyError("config.yaml is not valid YAML; nothing was changed.") from None
    try:
        node = _only(_only(root, PATH[0]), PATH[1], PATH[0])
    except ApplyError as e:
        raise ApplyError(
            f"{e}: there is no single value to replace; nothing was changed."
        ) from None
    start, end = node.start_mark.index, node.end_mark.index
    span = text[start:end]
    if (
        not isinstance(node, ScalarNode)
        or node.style not in (None, "'", '"')
        or getattr(node, "anchor", None)
        or span[:1] in ("!", "&", "*")
    ):
        raise ApplyError(
            "encryption.pickle_key in config.yaml is not a plain or quoted value on its own "
            "(a block scalar, a tag, an anchor or an alias); edit it by hand, nothing was changed."
        )
    return node, start, end


def replace_pickle_key(text: str, new_key: str) -> Edit:
    node, start, end = locate(text)
    new_text = text[:start] + render_like(node.style, new_key) + text[end:]
    edit = Edit(
        new_text,
        str(node.value),
        len(text[:start].encode("utf-8")),
        len(text[:end].encode("utf-8")),
    )
    verify(text.encode("utf-8"), new_text.encode("utf-8"), edit, new_key)
    return edit


def _tree(data: bytes) -> object:
    try:
        return parse_yaml(data.decode("utf-8"))
    except (Refused, YAMLError, RecursionError, UnicodeDecodeError):
        raise ApplyError(
            "config.yaml does not parse the same after the edit; nothing was changed."
        ) from None


def verify(old: bytes, new: bytes, edit: Edit, new_key: str) -> None:
    """Byte level: everything outside the value is identical. Data level: the documents differ
    in encryption.pickle_key only, and it now holds `new_key`."""
    tail = len(old) - edit.end
    if old[: edit.start] != new[: edit.start] or old[edit.end :] != new[len(new) - tail :]:
        raise ApplyError("the edit would change more than the key; nothing was changed.")
    before, after = _tree(old), _tree(new)
    if not (isinstance(before, dict) and isinstance(after, dict)):
        raise ApplyError("config.yaml is not a mapping; nothing was changed.")
    enc_after = after.get(PATH[0])
    if not isinstance(enc_after, dict) or enc_after.get(PATH[1]) != new_key:
        raise ApplyError("the edit did not set the key as intended; nothing was changed.")
    enc_before = before.get(PATH[0])
    if not isinstance(enc_before, dict):
        raise ApplyError("config.yaml has no encryption mapping; nothing was changed.")
    if {**before, PATH[0]: {**enc_before, PATH[1]: new_key}} != after:
        raise ApplyError("the edit would change more than the key; nothing was changed.")
