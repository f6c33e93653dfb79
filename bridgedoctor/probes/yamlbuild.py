"""Build a YAML document from the parser events that bridgefile already walks for its caps.

ruamel's safe `load` composes a node graph and then constructs it through its resolver and
constructor in Python, which costs about five times the event walk for an MDAD config; a `check
all` spends most of its time there. Almost every bridge config is plain mappings, sequences and
scalars, so the document is built here in the same pass over the events, with ruamel's own
resolver and constructor for every plain scalar that could be something other than a string
(numbers, booleans, null): the same values `YAML(typ="safe").load` gives.

Anything this builder does not reproduce exactly is `Unusual`, and the caller then runs ruamel's
own `load` on the text (after the caps, as before): explicit tags other than `!!str`, merge keys
(`<<`), timestamps and other resolved types, collections as mapping keys, duplicate keys (ruamel
refuses them), aliases to an anchor not yet closed, anchors defined twice, and any stream that is
not one document.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.nodes import ScalarNode

_STR = "tag:yaml.org,2002:str"
# Resolved types whose safe construction is a plain, immutable Python value.
_PLAIN_TYPES = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null")
)  # fmt: skip
_NO_KEY = object()
# Plain scalars resolve by their text alone (YAML 1.2, ruamel's resolver) to immutable values, and
# configs repeat the same few (true, false, null, 0, ports): remembered, within a fixed bound.
_RESOLVED: dict[str, Any] = {}
_CACHED_LEN = 40
_CACHED_MAX = 4096
# ruamel 0.18 keeps an event's tag as `ctag` and makes `tag` a costly property; 0.17 (Debian 12's)
# has a plain `tag`. Either way: None for an untagged node.
_tag_of = attrgetter("ctag" if hasattr(ScalarEvent, "ctag") else "tag")


class Unusual(Exception):
    """Something only ruamel's own load reproduces exactly: the caller uses that instead."""


class Builder:
    """Feed every event of one stream to `see`; `value()` is the document."""

    def __init__(self, yaml: Any) -> None:
        self._resolver = yaml.resolver
        self._constructor = yaml.constructor
        # First characters for which some implicit type other than str could apply.
        self._typed_first = frozenset(k for k in self._resolver.versioned_resolver if k)
        self._stack: list[Any] = []  # open collections
        self._keys: list[Any] = []  # per open collection: a mapping's pending key
        self._anchors: dict[str, Any] = {}  # closed anchors: what an alias may name
        self._open: list[str | None] = []  # the anchor of each open collection
        self._docs = 0
        self._root: Any = None

    def value(self) -> Any:
        if self._docs != 1 or self._stack:
            raise Unusual("not one whole document")
        return self._root

    def see(self, ev: Any) -> None:
        kind = type(ev)
        if kind is ScalarEvent:
            self._add(self._scalar(ev), ev.anchor)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if _tag_of(ev) is not None:
                raise Unusual("a tagged collection")
            new: Any = {} if kind is MappingStartEvent else []
            self._add(new, ev.anchor, container=True)
            self._stack.append(new)
            self._keys.append(_NO_KEY)
            self._open.append(ev.anchor)
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            closed = self._stack.pop()
            if self._keys.pop() is not _NO_KEY:
                raise Unusual("a key without a value")
            anchor = self._open.pop()
            if anchor is not None:
                self._anchors[anchor] = closed
        elif kind is AliasEvent:
            # An open collection's anchor is not in _anchors yet: an alias to it is recursive.
            if ev.anchor not in self._anchors:
                raise Unusual("an alias to an unknown or open anchor")
            self._add(self._anchors[ev.anchor], None)
        elif kind is DocumentStartEvent:
            self._docs += 1
            if self._docs > 1:
                raise Unusual("more than one document")
        elif kind not in (DocumentEndEvent, StreamStartEvent, StreamEndEvent):
            raise Unusual(f"event {kind.__name__}")

    def _scalar(self, ev: Any) -> Any:
        value: str = ev.value
        tag = _tag_of(ev)
        if tag is not None and str(tag) != "!":
            if str(tag) == _STR:
                return value
            raise Unusual("a tagged scalar")
        if not ev.implicit[0]:  # quoted or block: a string (as ruamel's resolver decides)
            return value
        if value and value[0] not in self._typed_first:
            return value
        known = _RESOLVED.get(value, _NO_KEY)
        if known is not _NO_KEY:
            return known
        resolved = str(self._resolver.resolve(ScalarNode, value, (True, False)))
        if resolved == _STR:
            out: Any = value
        elif resolved in _PLAIN_TYPES:
            out = self._constructor.construct_object(ScalarNode(resolved, value), deep=True)
        else:
            raise Unusual(f"a {resolved} scalar")
        if len(value) <= _CACHED_LEN and len(_RESOLVED) < _CACHED_MAX:
            _RESOLVED[value] = out
        return out

    def _add(self, value: Any, anchor: str | None, container: bool = False) -> None:
        if anchor is not None:
            if anchor in self._open or anchor in self._anchors:
                raise Unusual("an anchor defined twice")  # ruamel warns, or refuses
            if not container:  # a collection's anchor names it once it is closed
                self._anchors[anchor] = value
        if not self._stack:
            self._root = value
            return
        top = self._stack[-1]
        if type(top) is list:
            top.append(value)
            return
        key = self._keys[-1]
        if key is _NO_KEY:
            if container or isinstance(value, (dict, list)):
                raise Unusual("a collection as a mapping key")
            if value in top:
                raise Unusual("a duplicate key")
            self._keys[-1] = value
        else:
            top[key] = value
            self._keys[-1] = _NO_KEY
