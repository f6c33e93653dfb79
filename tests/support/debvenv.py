"""bridgedoctor installed with Debian's own Python (/usr/bin/python3), for the systemd-nspawn tier.

Inside a container that shares the host's /usr (tests/support/nspawn.py), only a venv made from
/usr/bin/python3 runs: the development Python lives elsewhere. The venv is built once in
<repo>/.venv-debian (dependencies from the package index, as an admin's `pip install` would),
and bridgedoctor itself is reinstalled, not editable, whenever its source changed, so the
container runs exactly this checkout. Bind it at the same path inside (its scripts' #! lines
name that path) and, for the helper's unit, at /opt/bridgedoctor as well.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _source_digest() -> str:
    h = hashlib.sha256()
    for p in sorted([REPO / "pyproject.toml", *(REPO / "bridgedoctor").rglob("*")]):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _run(*cmd: str | Path) -> None:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        )


def debian_venv(path: Path = REPO / ".venv-debian") -> Path:
    """The venv, current with this checkout (safe when several test processes ask at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".venv-debian.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "bin" / "python").exists():
            _run(DEBIAN_PYTHON, "-m", "venv", path)
            _run(path / "bin" / "pip", "install", "-q", "--disable-pip-version-check", REPO)
        stamp = path / ".bridgedoctor-source"
        digest = _source_digest()
        if not stamp.exists() or stamp.read_text() != digest:
            _run(
                path / "bin" / "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
                REPO,
            )
            stamp.write_text(digest)
    return path
