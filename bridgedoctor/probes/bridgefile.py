"""Read a file a bridge's container can write, as untrusted input to a root process.

Every file under a bridge's directory (config.yaml, registration.yaml, anything in data/) is
written by the bridge's container, so it is read here and nowhere else, by these rules:

- the path must lie inside the bridge's directory, and no component below that directory may be
  a symbolic link (each is opened with O_NOFOLLOW relative to its parent's descriptor, so a link
  swapped in while we walk is refused, not followed);
- the file must be a regular file with a single link (no FIFO, device, directory or hard link to
  a file elsewhere), owned by the bridge directory's owner or by root;
- at most `max_bytes` are read, counted while reading from the descriptor (st_size can lie:
  /proc files, a growing file);
- YAML is walked as parser events (libyaml's parser is a loop, not a recursion) with caps on
  nesting and on the node count with aliases expanded; the document is built from the events
  that passed the caps (probes/yamlbuild.py), and the rare one that needs ruamel's own load is
  composed only after the whole walk: a deeply nested document or an alias bomb is refused
  before anything recursive or exponential runs.

Every refusal is a `ProbeError` with one sentence; nothing here raises on bad input.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

# Not typing's TYPE_CHECKING: the SQLite reader's fork server imports this module, and
# importing typing is a tenth of its start.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the SQLite reader's child imports this module, and needs no facts classes
    from typing import Any

    from ..facts import ProbeError

MAX_YAML_BYTES = 1024 * 1024  # MDAD's biggest config.yaml is about 20 KiB
MAX_YAML_DEPTH = 64  # MDAD's configs nest 5 levels deep
MAX_YAML_NODES = 50_000  # scalars and collections, aliases counted as what they expand to
_CHUNK = 64 * 1024
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
    # Only a directory component is ever judged when it is a regular file (ENOTDIR).
    stat.S_IFREG: "a file where a directory should be",
}


class Refused(Exception):
    """A bridge file that must not be read; `code` is missing, unreadable or refused."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def inside(path: Path, base: Path) -> tuple[str, ...]:
    """The components of `path` below `base`, or Refused if it is not lexically inside it."""
    parts = path.parts
    top = base.parts
    if parts[: len(top)] != top or len(parts) == len(top):
        raise Refused("refused", f"{path} is outside the bridge directory {base}.")
    rest = parts[len(top) :]
    if any(p in ("..", ".", "") for p in rest):
        raise Refused("refused", f"{path} is outside the bridge directory {base}.")
    return rest


def open_dir(base: Path, rest: tuple[str, ...], shown: Path) -> int:
    """A descriptor for base/rest..., refusing a symlink or non-directory at any level below
    base. The caller closes it."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused("missing", f"{base} does not exist.") from None
    except OSError as e:
        raise Refused("unreadable", f"{base} cannot be opened ({_reason(e)}).") from None
    walked = base
    try:
        for name in rest:
            walked = walked / name
            nxt = openat(fd, name, os.O_RDONLY | os.O_DIRECTORY, walked, shown)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def openat(dirfd: int, name: str, flags: int, at: Path, shown: Path) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dirfd)
    except FileNotFoundError:
        raise Refused("missing", f"{shown} does not exist.") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                what = kind(os.lstat(name, dir_fd=dirfd).st_mode)
            except OSError:
                what = "not what it should be"
            raise Refused(
                "refused",
                f"{at} is {what}; bridgedoctor does not follow links or special files in a "
                "bridge's directory (MDAD writes real files there).",
            ) from None
        raise Refused("unreadable", f"{shown} cannot be opened ({_reason(e)}).") from None


def check_file(st: os.stat_result, path: Path, owner: int | None) -> None:
    """Regular, one link, and owned by `owner` or root (when `owner` is given)."""
    if not stat.S_ISREG(st.st_mode):
        raise Refused(
            "refused", f"{path} is {kind(st.st_mode)}, not a regular file; it was not read."
        )
    if st.st_nlink != 1:
        raise Refused(
            "refused",
            f"{path} has {st.st_nlink} hard links, so it may be another file's content; "
            "it was not read (MDAD writes a file with one link).",
        )
    if owner is not None and st.st_uid not in (owner, 0):
        raise Refused(
            "refused",
            f"{path} is owned by uid {st.st_uid}, not by the bridge's owner (uid {owner}) or "
            "root; it was not read.",
        )


def read_bytes(path: Path, base: Path, max_bytes: int) -> bytes:
    """The content of `path` (inside `base`), read by the rules above; raises Refused."""
    rest = inside(path, base)
    dirfd = open_dir(base, rest[:-1], path)
    try:
        owner = os.fstat(dirfd).st_uid if rest[:-1] else _base_owner(base)
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = openat(dirfd, rest[-1], os.O_RDONLY | os.O_NONBLOCK, path, path)
    finally:
        os.close(dirfd)
    try:
        check_file(os.fstat(fd), path, owner)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise Refused(
                    "refused",
                    f"{path} is larger than {max_bytes // 1024} KiB; not a file this bridge "
                    "writes, so it was not read.",
                )
            chunks.append(chunk)
    except OSError as e:
        raise Refused("unreadable", f"{path} cannot be read ({_reason(e)}).") from None
    finally:
        os.close(fd)


def _base_owner(base: Path) -> int | None:
    try:
        return os.stat(base).st_uid
    except OSError:
        return None


def read_bridge_file(
    path: Path, base: Path | None = None, *, what: str, max_bytes: int
) -> bytes | ProbeError:
    """`read_bytes` as a probe result: the bytes, or ProbeError(f"{what}_missing" |
    f"{what}_unreadable" | f"{what}_refused", one sentence). `base` defaults to the file's
    own directory (then only the file itself is checked)."""
    from ..facts import ProbeError

    try:
        return read_bytes(path, base or path.parent, max_bytes)
    except Refused as r:
        return ProbeError(f"{what}_{r.code}", r.message)


def load_bridge_yaml(
    path: Path, base: Path | None = None, *, what: str, max_bytes: int = MAX_YAML_BYTES
) -> Any | ProbeError:
    """A bridge-written YAML file parsed safely: the document, or ProbeError (as above, plus
    f"{what}_unreadable" for text that is not UTF-8 or not YAML, and f"{what}_refused" for
    a document nested or aliased past the caps)."""
    from ..facts import ProbeError

    data = read_bridge_file(path, base, what=what, max_bytes=max_bytes)
    if isinstance(data, ProbeError):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return ProbeError(
            f"{what}_unreadable", f"{path} is not UTF-8 text (bad byte at offset {e.start})."
        )
    try:
        return parse_yaml(text)
    except Refused as r:
        return ProbeError(f"{what}_{r.code}", f"{path} {r.message}")
    except Exception as e:  # noqa: BLE001 - any parser or constructor error is bad input
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return ProbeError(f"{what}_unreadable", f"{path} is not valid YAML{where}.")


def parse_yaml(text: str) -> Any:
    """Safe-load one YAML document, checking its shape from parser events as they come. The
    document is built from those same events (probes/yamlbuild.py) unless it uses something
    only ruamel's own load reproduces; then that load runs, after the whole walk."""
    from ruamel.yaml import YAML  # not at the top: the SQLite reader's child needs no YAML

    from .yamlbuild import Builder, Unusual

    yaml = YAML(typ="safe")
    builder: Builder | None = Builder(yaml)
    for ev in _checked_events(text, yaml):
        if builder is not None:
            try:
                builder.see(ev)
            except Unusual:
                builder = None
    if builder is not None:
        try:
            return builder.value()
        except Unusual:
            pass
    return YAML(typ="safe").load(text)


def _checked_events(text: str, yaml: Any) -> Iterator[Any]:
    """The parser's events, refused (Refused) past the nesting and node caps."""
    from ruamel.yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        CollectionStartEvent,
        NodeEvent,
    )

    depth = 0
    # One running node count per open collection; aliases add what their anchor expanded to.
    counts = [0]
    anchored: dict[str, int] = {}
    anchors: list[str | None] = []
    for ev in yaml.parse(text):
        if isinstance(ev, CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise Refused(
                    "refused", f"nests deeper than {MAX_YAML_DEPTH} levels; it was not parsed."
                )
            counts.append(1)
            anchors.append(ev.anchor)
            yield ev
            continue
        if isinstance(ev, CollectionEndEvent):
            depth -= 1
            n = counts.pop()
            anchor = anchors.pop()
            if anchor:
                anchored[anchor] = n
            counts[-1] += n
        elif isinstance(ev, AliasEvent):
            counts[-1] += anchored.get(str(ev.anchor), 1)
        elif isinstance(ev, NodeEvent):  # a scalar
            if ev.anchor:
                anchored[str(ev.anchor)] = 1
            counts[-1] += 1
        if counts[-1] > MAX_YAML_NODES or sum(counts) > MAX_YAML_NODES:
            raise Refused(
                "refused",
                f"holds more than {MAX_YAML_NODES} values (aliases expanded); it was not parsed.",
            )
        yield ev


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__
