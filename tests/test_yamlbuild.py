"""probes/yamlbuild.py: a document built from parser events is exactly what ruamel's safe load
gives (the oracle), for MDAD's real configs, for generated documents, and for every YAML feature
the builder hands back to ruamel."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from bridgedoctor.probes import yamlbuild
from bridgedoctor.probes.bridgefile import parse_yaml
from tests.fixtures import mdad


def oracle(text: str) -> Any:
    return YAML(typ="safe").load(text)


def agree(text: str) -> bool:
    """parse_yaml gives the oracle's document, or fails where the oracle fails (any exception:
    load_bridge_yaml turns every one into "not valid YAML"; which line is blamed first may
    differ, as the caps walk the whole text before ruamel composes)."""
    try:
        want = oracle(text)
    except Exception:  # noqa: BLE001
        with pytest.raises(Exception):  # noqa: B017
            parse_yaml(text)
        return True
    return same(parse_yaml(text), want)


def same(a: Any, b: Any, seen: set[tuple[int, int]] | None = None) -> bool:
    """Equal, types included (True == 1 == 1.0 in Python; a YAML `1` is not `true`), NaN too,
    and documents that contain themselves (an alias to an open anchor)."""
    if type(a) is not type(b):
        return False
    seen = set() if seen is None else seen
    if isinstance(a, (dict, list)):
        if (id(a), id(b)) in seen:
            return True
        seen.add((id(a), id(b)))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(k, k2, seen) and same(a[k], b[k2], seen)
                                          for k, k2 in zip(a, b, strict=True))  # fmt: skip
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, seen) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def built(text: str) -> Any:
    """The builder alone, without the fallback: raises yamlbuild.Unusual when it hands over."""
    y = YAML(typ="safe")
    b = yamlbuild.Builder(y)
    for ev in y.parse(text):
        b.see(ev)
    return b.value()


@pytest.mark.parametrize("bridge", sorted(mdad.BRIDGES))
def test_every_mdad_config_and_registration_is_built_without_ruamel_load(
    bridge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = mdad.render_config(bridge, db_uri=f"postgres://u:p%40ss@matrix-postgres/{bridge}")
    reg = mdad.render_registration(bridge)
    expected = (oracle(cfg), oracle(reg))

    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("ruamel's load ran: the builder handed an MDAD file over")

    monkeypatch.setattr(YAML, "load", no_load)
    assert same(parse_yaml(cfg), expected[0])
    assert same(parse_yaml(reg), expected[1])


# Plain scalars that resolve to every type, and strings that only look like them.
TRICKY = [
    "true", "false", "True", "FALSE", "yes", "no", "on", "off", "y", "n", "null", "Null", "~",
    "", "0", "-0", "+1", "007", "0o17", "0x1F", "0b101", "1_000", "1e3", "1.5", "-.5", ".inf",
    "-.Inf", ".nan", "NaN", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30", "<<", "=",
    "- x", "a: b", "#", "!x", "&a", "*a", "%x", "@x", "`x", "'", '"', "|", ">", "?", ",", "[",
    "{", "tab\there", "new\nline", "  lead", "trail  ", "é", "\u202e", "0.", "1.", "+.5",
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
keys = st.one_of(st.sampled_from(TRICKY), st.text(max_size=8), st.integers(), st.booleans())
docs = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


def dump(data: Any, flow: bool | None) -> str:
    y = YAML(typ="safe")
    y.default_flow_style = flow
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


@settings(max_examples=400, deadline=None)
@given(docs, st.sampled_from([None, False, True]))
def test_generated_documents_come_out_as_ruamel_loads_them(data: Any, flow: bool | None) -> None:
    text = dump(data, flow)
    assert agree(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), min_size=1, max_size=6))
def test_tricky_plain_scalars_resolve_as_ruamel_resolves_them(values: list[str]) -> None:
    # Written by hand, unquoted where YAML lets them be: the resolver decides, not the dumper.
    text = "".join(f"k{i}: {v}\n" for i, v in enumerate(values))
    assert agree(text)


HANDED_OVER = {
    "merge key": "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
    "duplicate key": "a: 1\na: 2\n",
    "duplicate key of another spelling": "1: a\n0x1: b\n",
    "timestamp": "when: 2001-12-14\n",
    "binary": "b: !!binary aGVsbG8=\n",
    "set": "s: !!set {a, b}\n",
    "omap": "o: !!omap [a: 1, b: 2]\n",
    "tagged int": "n: !!int '7'\n",
    "local tag": "x: !foo bar\n",
    "complex key": "? [a, b]\n: c\n",
    "mapping key": "? {a: 1}\n: c\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "empty stream": "",
    "comment only": "# nothing\n",
    "alias to an open anchor": "a: &x [1, *x]\n",
    "anchor reused inside itself": "a: &x [&x [1], *x]\n",
    "unknown alias": "a: *nope\n",
    "anchor redefined": "a: &x 1\nb: &x 2\nc: *x\n",
    "value key": "=: 1\n",
    "alias to a sequence as a key": "a: &x [1, 2]\n*x : y\n",
    "alias to a mapping as a key": "a: &x {b: 1}\n*x : y\n",
}


@pytest.mark.parametrize("name", sorted(HANDED_OVER))
def test_what_the_builder_does_not_reproduce_goes_to_ruamel(name: str) -> None:
    text = HANDED_OVER[name]
    with pytest.raises(yamlbuild.Unusual):
        built(text)
    assert agree(text)


BUILT_HERE = {
    "scalar alias": "a: &p 8080\nb: *p\n",
    "mapping alias": "a: &m {x: [1, 2]}\nb: *m\n",
    "explicit str": "a: !!str 123\nb: ! 12\n",
    "quoted and block": "a: '1'\nb: \"true\"\nc: |\n  null\nd: >\n  3\n",
    "empty values": "a:\nb: []\nc: {}\nd: ''\n",
    "null key": "~: 1\nnull2: 2\n",
    "root scalar": "42\n",
    "root sequence": "- 1\n- [a, {b: c}]\n",
    "explicit document": "---\na: 1\n...\n",
}


@pytest.mark.parametrize("name", sorted(BUILT_HERE))
def test_what_the_builder_reproduces_it_builds_itself(name: str) -> None:
    text = BUILT_HERE[name]
    assert same(built(text), oracle(text))
    assert same(parse_yaml(text), oracle(text))


def test_an_alias_is_the_same_object_as_ruamel_makes_it() -> None:
    doc = parse_yaml("a: &m {x: 1}\nb: *m\n")
    assert doc["a"] is doc["b"]


def test_the_resolution_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlbuild, "_RESOLVED", {})
    monkeypatch.setattr(yamlbuild, "_CACHED_MAX", 10)
    text = "".join(f"k{i}: {i}\n" for i in range(50)) + "long: " + "1" * 60 + "\n"
    assert parse_yaml(text)["k49"] == 49
    assert len(yamlbuild._RESOLVED) == 10
    assert "1" * 60 not in yamlbuild._RESOLVED
