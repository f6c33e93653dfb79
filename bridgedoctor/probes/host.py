"""Discover MDAD bridges under a root and read their systemd units."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..facts import UnitFacts
from ..knowledge import Knowledge

MDAD_ROOT = PurePosixPath("/matrix")
# A shell word, quotes kept (shlex.split is pure Python, char by char: ms per unit).
_WORD_RE = re.compile(r"""(?:[^\s'"\\]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.)+""")
_QUOTING_RE = re.compile(r"""\\(.)|["']""")
_MOUNT_RE = re.compile(r"--mount[= ]type=bind,src=([^,\s]+),dst=([^,\s]+)(,ro)?")
# An image's content digest, as the OCI image spec writes one: algorithm ":" encoded (in
# practice "sha256:" and 64 hex digits, but the grammar allows others).
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def reroot(path: str, root: Path) -> Path:
    """Map an absolute MDAD path (/matrix/...) onto the root being inspected."""
    p = PurePosixPath(path)
    try:
        rel = p.relative_to(MDAD_ROOT)
    except ValueError:
        return Path(path)
    return root.joinpath(*rel.parts)


def discover(root: Path, systemd_dir: Path, kb: Knowledge) -> list[str]:
    """Names of the bridges deployed under root: a config dir or a unit file is enough."""
    found: list[str] = []
    for name, spec in kb.bridges.items():
        has_dir = (root / spec.dirname / "config" / "config.yaml").is_file()
        has_unit = (systemd_dir / f"{spec.service}.service").is_file()
        if has_dir or has_unit:
            found.append(name)
    return found


def _unquote(word: str) -> str:
    return _QUOTING_RE.sub(lambda m: m.group(1) or "", word)


def image_reference(word: str) -> tuple[str, str | None, str | None] | None:
    """(name, tag, digest) of an image pinned by tag, digest or both:
    `[registry[:port]/]path[:tag][@digest]`, e.g. `reg:5000/a/b:v1@sha256:...`. None for a
    word that is no such reference (no `/`, neither tag nor digest, an `=`, a bad digest)."""
    name, at, digest = word.partition("@")
    if (at and not _DIGEST_RE.fullmatch(digest)) or "/" not in name or "=" in name:
        return None
    # A colon after the last slash starts the tag; one before it is the registry's port.
    colon = name.rfind(":")
    tag = None
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    if not (tag or digest):
        return None
    return name, tag or None, digest or None


def read_unit(path: Path, root: Path) -> UnitFacts | None:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    # systemd continuation lines: join them so each docker argument sits on one logical line.
    flat = text.replace("\\\n", " ")
    config_dir = data_dir = None
    config_ro = False
    mounts: list[tuple[str, Path]] = []
    for src, dst, ro in _MOUNT_RE.findall(flat):
        mounts.append((dst, reroot(src, root)))
        if dst == "/config":
            config_dir, config_ro = reroot(src, root), bool(ro)
        elif dst == "/data":
            data_dir = reroot(src, root)
    image = tag = digest = None
    for line in flat.splitlines():
        if "docker" not in line or " create " not in f" {line} ":
            continue
        words = _WORD_RE.findall(line.split("=", 1)[1] if line.startswith("ExecStart") else line)
        for w in map(_unquote, words):
            ref = None if w.startswith("-") else image_reference(w)
            if ref is not None:
                image, tag, digest = ref
                break
    return UnitFacts(
        path=path,
        image=image,
        tag=tag,
        digest=digest,
        config_dir=config_dir,
        data_dir=data_dir,
        config_read_only=config_ro,
        no_update="--no-update" in flat,
        mounts=tuple(mounts),
    )
