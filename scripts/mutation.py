"""Mutation testing of bridgedoctor's safety-critical modules (docs/MUTATION.md).

    scripts/mutation guards [ID ...]    the hand-written guard mutants of scripts/mutation-guards.toml
    scripts/mutation run [GROUP ...]    mutmut over the safety-critical modules; score per module
    scripts/mutation ci                 the bounded run of .ci/run: guards, then mutmut over the
                                        guard functions; fails on any survivor not judged equivalent

Everything runs in a scratch copy of the working tree (tracked and untracked, not ignored, files):
a fresh checkout every time, no saved Hypothesis examples, no mutmut cache. One PostgreSQL
cluster serves every test run (BRIDGEDOCTOR_TEST_PG, started here unless already set).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
GUARDS = REPO / "scripts" / "mutation-guards.toml"


# --- the scratch copy and the database ----------------------------------------------------------


def scratch_copy() -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    dest = Path(tempfile.mkdtemp(prefix="bd-mutation-"))
    for raw in listed:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


@contextlib.contextmanager
def postgres() -> Iterator[None]:
    if os.environ.get("BRIDGEDOCTOR_TEST_PG"):
        yield
        return
    sys.path.insert(0, str(REPO))
    from tests.support.pg import TempCluster

    cluster = TempCluster()
    server = cluster.start()
    os.environ["BRIDGEDOCTOR_TEST_PG"] = server.dsn()
    try:
        yield
    finally:
        del os.environ["BRIDGEDOCTOR_TEST_PG"]
        cluster.stop()


def pytest(where: Path, tests: list[str], timeout: float = 900) -> int:
    """pytest's exit code: 0 passed, 1 a test failed, anything else an error."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = {**os.environ, "BRIDGEDOCTOR_REQUIRE_E2E": "0"}
    try:
        r = subprocess.run(cmd, cwd=where, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1
    return r.returncode


# --- hand-written guard mutants -------------------------------------------------------------------


@dataclass(frozen=True)
class GuardMutant:
    id: str
    why: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


def load_guards(only: list[str]) -> list[GuardMutant]:
    raw = tomllib.loads(GUARDS.read_text("utf-8"))["mutant"]
    out = [GuardMutant(**{**m, "tests": tuple(m["tests"])}) for m in raw]
    unknown = set(only) - {m.id for m in out}
    if unknown:
        raise SystemExit(f"mutation: no guard mutant named {', '.join(sorted(unknown))}.")
    return [m for m in out if not only or m.id in only]


def run_guards(only: list[str], where: Path) -> bool:
    mutants = load_guards(only)
    stale = []
    for m in mutants:
        n = (where / m.file).read_text("utf-8").count(m.find)
        if n != 1:
            stale.append(f"{m.id}: its text occurs {n} times in {m.file}")
    if stale:
        print(
            "mutation: guard entries no longer match the code (update them):", *stale, sep="\n  "
        )
        return False
    tests = sorted({t for m in mutants for t in m.tests})
    if pytest(where, tests) != 0:
        print("mutation: the guard tests do not pass on the unmutated code; fix that first.")
        return False
    survivors = []
    for m in mutants:
        path = where / m.file
        original = path.read_text("utf-8")
        path.write_text(original.replace(m.find, m.replace, 1), "utf-8")
        started = time.monotonic()
        try:
            code = pytest(where, list(m.tests))
        finally:
            path.write_text(original, "utf-8")
        verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error ({code})")
        print(f"  {verdict:<10} {m.id:<38} {time.monotonic() - started:5.1f}s  {m.why}")
        if code != 1:
            survivors.append(m.id)
    print(f"guard mutants: {len(mutants) - len(survivors)} of {len(mutants)} killed")
    return not survivors


# --- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("guards", help="the hand-written guard mutants; each must be killed")
    g.add_argument("ids", nargs="*", help="only these mutants (ids from mutation-guards.toml)")
    args = p.parse_args(argv)
    where = scratch_copy()
    try:
        with postgres():
            if args.command == "guards":
                return 0 if run_guards(args.ids, where) else 1
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
