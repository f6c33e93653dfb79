"""probes/bridgefile.py: bridge-written files read as untrusted input, each refusal one sentence."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.facts import ProbeError
from bridgedoctor.probes import bridgefile
from bridgedoctor.probes.bridgefile import load_bridge_yaml, read_bridge_file

REPO = Path(__file__).resolve().parents[1]
OTHER_UID = 64_999  # no such user needed: only the number matters


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "mautrix-x"
    (b / "config").mkdir(parents=True)
    (b / "config" / "config.yaml").write_text("database:\n  uri: /data/x.db\n")
    return b


def read(path: Path, base: Path, max_bytes: int = 1 << 20) -> bytes | ProbeError:
    return read_bridge_file(path, base, what="config", max_bytes=max_bytes)


def refused(result: object, code: str = "config_refused") -> str:
    assert isinstance(result, ProbeError), result
    assert result.code == code, result
    assert result.message.endswith(".") and "\n" not in result.message
    return result.message


def finishes(fn: Any, seconds: float = 10.0) -> Any:
    """Run fn in a thread; fail (instead of hanging the suite) if it blocks."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the read blocked"
    return out[0]


def test_a_plain_config_is_read(base: Path) -> None:
    assert read(base / "config" / "config.yaml", base) == b"database:\n  uri: /data/x.db\n"
    tree = load_bridge_yaml(base / "config" / "config.yaml", base, what="config")
    assert tree == {"database": {"uri": "/data/x.db"}}


def test_missing_file_and_missing_dir(base: Path) -> None:
    refused(read(base / "config" / "nope.yaml", base), "config_missing")
    refused(read(base / "gone" / "config.yaml", base), "config_missing")


@pytest.mark.parametrize("target", ["inside", "outside", "dangling"])
def test_final_symlink_is_refused_wherever_it_points(
    base: Path, tmp_path: Path, target: str
) -> None:
    secret = tmp_path / "root-only.yaml"
    secret.write_text("database:\n  uri: postgres://root:hunter2@elsewhere/db\n")
    dest = {
        "inside": base / "config" / "real.yaml",
        "outside": secret,
        "dangling": tmp_path / "no-such-file",
    }[target]
    if target == "inside":
        dest.write_text("a: 1\n")
    cfg = base / "config" / "config.yaml"
    cfg.unlink()
    cfg.symlink_to(dest)
    message = refused(read(cfg, base))
    assert "is a symbolic link" in message and "hunter2" not in message


def test_symlinked_directory_is_refused(base: Path, tmp_path: Path) -> None:
    other = tmp_path / "mautrix-other" / "config"
    other.mkdir(parents=True)
    (other / "config.yaml").write_text("database:\n  uri: postgres://other:pw@h/other\n")
    os.rename(base / "config", base / "config.real")
    (base / "config").symlink_to(other)
    message = refused(read(base / "config" / "config.yaml", base))
    assert f"{base / 'config'} is a symbolic link" in message


def test_outside_the_bridge_directory_is_refused(base: Path, tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("a: 1\n")
    assert "outside the bridge directory" in refused(read(tmp_path / "x.yaml", base))
    dotted = base / "config" / ".." / ".." / "x.yaml"
    assert "outside the bridge directory" in refused(read(dotted, base))


def test_fifo_is_refused_without_blocking(base: Path) -> None:
    fifo = base / "config" / "config.yaml"
    fifo.unlink()
    os.mkfifo(fifo)
    assert "is a FIFO, not a regular file" in refused(finishes(lambda: read(fifo, base)))


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_node_is_refused(base: Path) -> None:
    dev = base / "config" / "config.yaml"
    dev.unlink()
    os.mknod(dev, 0o600 | 0o020000, os.makedev(1, 5))  # a /dev/zero twin
    assert "is a character device" in refused(finishes(lambda: read(dev, base)))


def test_directory_is_refused(base: Path) -> None:
    (base / "config" / "config.yaml").unlink()
    (base / "config" / "config.yaml").mkdir()
    assert "is a directory" in refused(read(base / "config" / "config.yaml", base))


def test_hard_link_is_refused(base: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-bridge-config.yaml"
    elsewhere.write_text("database:\n  uri: postgres://other:pw@h/other\n")
    cfg = base / "config" / "config.yaml"
    cfg.unlink()
    os.link(elsewhere, cfg)
    assert "has 2 hard links" in refused(read(cfg, base))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_must_be_the_bridge_owner_or_root(base: Path) -> None:
    cfg = base / "config" / "config.yaml"
    os.chown(cfg, OTHER_UID, OTHER_UID)  # the directory is root's: another uid's file is not
    assert f"owned by uid {OTHER_UID}" in refused(read(cfg, base))
    for d in (base, base / "config"):
        os.chown(d, OTHER_UID, OTHER_UID)  # now the bridge is that uid's: its own file is fine
    assert isinstance(read(cfg, base), bytes)
    os.chown(cfg, 0, 0)  # and so is a file root put there
    assert isinstance(read(cfg, base), bytes)
    os.chown(cfg, OTHER_UID + 1, 0)
    assert f"owned by uid {OTHER_UID + 1}" in refused(read(cfg, base))


def test_size_cap_is_enforced_while_reading_not_from_stat() -> None:
    """/proc files report st_size 0 but have content: only a cap counted while reading
    from the descriptor catches them."""
    maps = Path("/proc/self/maps")
    assert os.stat(maps).st_size == 0
    message = refused(bridgefile.read_bridge_file(maps, Path("/proc/self"), what="config",
                                                  max_bytes=64))  # fmt: skip
    assert "larger than 0 KiB" in message
    assert isinstance(read_bridge_file(maps, Path("/proc/self"), what="c", max_bytes=1 << 24),
                      bytes)  # fmt: skip


def test_size_cap_on_a_regular_file(base: Path) -> None:
    cfg = base / "config" / "config.yaml"
    cfg.write_bytes(b"a: " + b"x" * (2 << 20) + b"\n")
    assert "larger than 1024 KiB" in refused(read(cfg, base))
    message = refused(load_bridge_yaml(cfg, base, what="config"))
    assert "larger than 1024 KiB" in message


def yaml_of(base: Path, text: str | bytes) -> Any:
    cfg = base / "config" / "config.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_bridge_yaml(cfg, base, what="config")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000 + "]" * 200_000,  # flow
        "- " * 200_000 + "x\n",  # compact block sequences
        "".join(" " * i + "a:\n" for i in range(1000)),  # indented mappings
    ],
    ids=["flow", "dashes", "indent"],
)
def test_deep_nesting_is_refused_not_parsed(base: Path, text: str) -> None:
    message = refused(yaml_of(base, text))
    assert f"nests deeper than {bridgefile.MAX_YAML_DEPTH} levels" in message


def test_deep_nesting_would_crash_the_c_parser() -> None:
    """Why the event walk exists: the same document kills a process that just loads it."""
    code = "from ruamel.yaml import YAML; YAML(typ='safe').load('[' * 200000 + ']' * 200000)"
    from ruamel.yaml import YAML

    if "CParser" not in str(YAML(typ="safe").Parser):
        pytest.skip("no libyaml C extension here: the pure parser raises RecursionError instead")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode < 0  # killed by a signal (SIGSEGV)


def test_alias_bomb_is_refused(base: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    message = refused(yaml_of(base, "\n".join(lines) + "\n"))
    assert "aliases expanded" in message


def test_a_few_aliases_are_fine(base: Path) -> None:
    tree = yaml_of(base, "a: &s {k: v}\nb: *s\nc: [*s, *s]\n")
    assert tree == {"a": {"k": "v"}, "b": {"k": "v"}, "c": [{"k": "v"}, {"k": "v"}]}


def test_too_many_values_are_refused(base: Path) -> None:
    text = "".join(f"k{i}: v\n" for i in range(bridgefile.MAX_YAML_NODES))
    assert "holds more than" in refused(yaml_of(base, text))


def test_huge_single_line_under_the_cap_parses(base: Path) -> None:
    tree = yaml_of(base, "a: " + "x" * 900_000 + "\n")
    assert tree == {"a": "x" * 900_000}


def test_non_utf8_is_unreadable(base: Path) -> None:
    message = refused(yaml_of(base, b"database:\n  uri: \xff\xfe\n"), "config_unreadable")
    assert "is not UTF-8 text (bad byte at offset 17)" in message


@pytest.mark.parametrize(
    "text",
    [
        "a: [1\n",
        "a: 1\n---\nb: 2\n",
        "a: *nope\n",
        "a: 1\na: 2\n",
        "\x00\n",
        "!!python/name:os.system\n",
    ],
)
def test_invalid_yaml_is_one_sentence(base: Path, text: str) -> None:
    message = refused(yaml_of(base, text), "config_unreadable")
    assert "is not valid YAML" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: [1,\n", 3),
        ("- a\nb: c\n", 2),  # the problem's line, not the context's (line 1)
        ("a: 1\nb: &x 1\nc: *y\n", 3),
        ("a: 1\n\nkey: 'unterminated\n\n", 5),
    ],
)
def test_invalid_yaml_names_the_line_of_the_problem(base: Path, text: str, line: int) -> None:
    message = refused(yaml_of(base, text), "config_unreadable")
    assert message == f"{base / 'config' / 'config.yaml'} is not valid YAML at line {line}."


def test_yaml_below_a_symlinked_directory_is_refused(base: Path, tmp_path: Path) -> None:
    """load_bridge_yaml walks from the bridge directory it is given, not from the file's own."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.yaml").write_text("a: 1\n")
    os.rename(base / "config", base / "config.real")
    (base / "config").symlink_to(other)
    message = refused(load_bridge_yaml(base / "config" / "config.yaml", base, what="config"))
    assert f"{base / 'config'} is a symbolic link" in message
    # The same file, with its own directory as the bridge directory, is read: it is the walk
    # from `base` that refuses.
    assert load_bridge_yaml(base / "config" / "config.yaml", what="config") == {"a": 1}


def test_a_file_where_a_directory_should_be_is_refused(base: Path) -> None:
    (base / "data").write_text("not a directory\n")
    message = refused(read(base / "data" / "x.db", base))
    assert message.startswith(f"{base / 'data'} is a file where a directory should be;")


def test_what_cannot_be_opened_says_why(base: Path, tmp_path: Path) -> None:
    long = base / "config" / ("x" * 300)
    message = refused(read(long, base), "config_unreadable")
    assert message == f"{long} cannot be opened (File name too long)."
    (tmp_path / "file").write_text("")
    message = refused(
        read(tmp_path / "file" / "config.yaml", tmp_path / "file"), "config_unreadable"
    )
    assert message == f"{tmp_path / 'file'} cannot be opened (Not a directory)."


def test_each_refusal_names_the_path_it_is_about(base: Path, tmp_path: Path) -> None:
    cfg = base / "config" / "config.yaml"
    missing = base / "gone" / "config.yaml"
    assert refused(read(missing, base), "config_missing") == f"{missing} does not exist."
    gone = tmp_path / "no-bridge"
    message = refused(read(gone / "config.yaml", gone), "config_missing")
    assert message == f"{gone} does not exist."
    cfg.unlink()
    cfg.symlink_to(base / "elsewhere.yaml")
    assert refused(read(cfg, base)).startswith(f"{cfg} is a symbolic link; bridgedoctor does not")


def test_a_path_outside_the_bridge_directory_at_any_depth_is_refused(
    base: Path, tmp_path: Path
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.yaml").write_text("a: 1\n")
    for path in (tmp_path / "a" / "b" / "x.yaml", tmp_path / "x.yaml", base):
        message = refused(read(path, base))
        assert message == f"{path} is outside the bridge directory {base}."


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_owner_that_counts_is_the_owner_of_the_file_s_directory(base: Path) -> None:
    """config/ given to the bridge's uid (MDAD's layout): its files may be that uid's, whoever
    owns the bridge directory above it."""
    cfg = base / "config" / "config.yaml"
    os.chown(base / "config", OTHER_UID, OTHER_UID)
    os.chown(cfg, OTHER_UID, OTHER_UID)
    assert read(cfg, base) == b"database:\n  uri: /data/x.db\n"
    os.chown(base / "config", 0, 0)
    assert f"owned by uid {OTHER_UID}" in refused(read(cfg, base))


def test_the_size_cap_is_exact(base: Path) -> None:
    cfg = base / "config" / "config.yaml"
    cfg.write_bytes(b"x" * 1000)
    assert read(cfg, base, max_bytes=1000) == b"x" * 1000
    assert "larger than 0 KiB" in refused(read(cfg, base, max_bytes=999))
    cfg.write_bytes(b"")
    assert read(cfg, base, max_bytes=0) == b""


def test_a_file_that_fails_while_read_says_why() -> None:
    """/proc/self/mem: a regular file, root's, one link; reading offset 0 fails (EIO)."""
    got = read_bridge_file(Path("/proc/self/mem"), Path("/proc/self"), what="c", max_bytes=100)
    assert got == ProbeError("c_unreadable", "/proc/self/mem cannot be read (Input/output error).")


def test_refusals_of_the_file_itself_name_it(base: Path) -> None:
    cfg = base / "config" / "config.yaml"
    nope = base / "config" / "nope.yaml"
    assert refused(read(nope, base), "config_missing") == f"{nope} does not exist."
    cfg.unlink()
    cfg.mkdir()
    message = refused(read(cfg, base))
    assert message == f"{cfg} is a directory, not a regular file; it was not read."


def test_yaml_that_fails_without_a_position_is_one_sentence(base: Path) -> None:
    """Some texts make the constructor fail with no mark (IndexError from `!!int |`)."""
    message = refused(yaml_of(base, "!!int |\n"), "config_unreadable")
    assert message == f"{base / 'config' / 'config.yaml'} is not valid YAML."


def flow(*items: str) -> str:
    return "[" + ", ".join(items) + "]\n"


def test_the_nesting_cap_is_exact(base: Path) -> None:
    cap = bridgefile.MAX_YAML_DEPTH
    deepest: list = []
    for _ in range(cap - 1):
        deepest = [deepest]
    assert yaml_of(base, "[" * cap + "]" * cap) == deepest
    assert "nests deeper" in refused(yaml_of(base, "[" * (cap + 1) + "]" * (cap + 1)))
    # Closing a collection goes up one level, not more, not to the top.
    for before in (1, 10):
        text = "[" * before + "[], " + "[" * (cap + 1 - before) + "]" * (cap + 1)
        assert "nests deeper" in refused(yaml_of(base, text)), before


def _value_cap_case(case: str) -> tuple[list[str], bool | None]:
    """Built when the test runs, not at collection: a guard mutant that raises the cap
    (scripts/mutation-guards.toml) must fail this test, not stop pytest from collecting."""
    n = bridgefile.MAX_YAML_NODES
    return {
        # One sequence counts itself and its items: 49,999 items make 50,000 values.
        "one under": (["x"] * (n - 1), True),
        "at the cap": (["x"] * n, False),
        # A nested collection adds itself and all it holds to its parent, after what came before.
        "nested over": (["x"] * 49_990 + ["[x, x]"] + ["x"] * 100, False),
        "nested under": (["x"] * 49_990 + ["[x, x]"] + ["x"] * 6, True),
        # An alias to a scalar counts one; an alias to nothing known counts one.
        "alias to a scalar": (["&s x"] + ["x"] * (n - 3) + ["*s"], True),
        "unknown alias": (["x"] * (n - 2) + ["*nope"], None),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "one under",
        "at the cap",
        "nested over",
        "nested under",
        "alias to a scalar",
        "unknown alias",
    ],
)
def test_the_value_cap_is_exact(base: Path, case: str) -> None:
    items, ok = _value_cap_case(case)
    got = yaml_of(base, flow(*items))
    if ok is None:  # under the cap, then refused by the parser for its unknown alias
        assert refused(got, "config_unreadable").endswith("is not valid YAML at line 1.")
    elif ok:
        assert isinstance(got, list) and len(got) == len(items)
    else:
        assert "holds more than 50000 values" in refused(got)


def test_an_alias_counts_what_its_anchor_holds(base: Path) -> None:
    big = flow(*["x"] * 20_000).strip()
    assert "aliases expanded" in refused(yaml_of(base, f"a: &a {big}\nb: *a\nc: *a\n"))
    # An anchor named like another, on a scalar, does not change what the other holds.
    text = f"a: &None {big}\nb: &s v\nc: *None\nd: *None\n"
    assert "aliases expanded" in refused(yaml_of(base, text))
