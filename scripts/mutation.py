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
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
GUARDS = REPO / "scripts" / "mutation-guards.toml"
EQUIVALENT = REPO / "docs" / "mutation-equivalent.toml"

# The safety-critical modules (issue #14). Globs relative to the repository.
SAFETY_CRITICAL = (
    "bridgedoctor/pickle.py",
    "bridgedoctor/proof.py",
    "bridgedoctor/findings.py",
    "bridgedoctor/protocol.py",
    "bridgedoctor/rules/*.py",
    "bridgedoctor/probes/*.py",
    "bridgedoctor/helper/*.py",
    "bridgedoctor/reset/*.py",
    "bridgedoctor/render/*.py",
    "bridgedoctor_maubot/pending.py",
    "bridgedoctor_maubot/resets.py",
    "bridgedoctor_maubot/config.py",
)
# Not run for mutants: the end-to-end, systemd-nspawn and hostile-bridge suites (minutes each;
# every guard they pass through has a faster unit test), the .mbp packaging test (mutated files
# import mutmut), and the test of what the SQLite fork server imports (mutmut's trampolines in
# every mutated module import typing, dataclasses and more: it fails on the clean copy too).
DESELECT = (
    "--ignore=tests/e2e",
    "--ignore=tests/systemd",
    "--ignore=tests/hostile",
    "--ignore=tests/test_plugin_package.py",
    "--deselect=tests/test_sqlite_read.py::test_the_fork_server_imports_nothing_a_read_does_not_need",
)
# The bounded run of .ci/run (a few minutes on 2 cores): guard functions whose tests are quick,
# as mutmut names them (module.x_function or module.xǁClassǁmethod), and those tests. Mutants are
# run only against CI_TESTS, so a function belongs here only when CI_TESTS alone kill all of its
# mutants. The guards in slower code (the helper's server and reset ops, recovery, reactions, the
# request parser, the key rules) are in mutation-guards.toml, which CI runs too, and in `run`.
CI_FUNCTIONS = (
    "bridgedoctor.pickle.x_mac_matches",
    "bridgedoctor.pickle.x_decrypt",
    "bridgedoctor.pickle.x_verify_account",
    "bridgedoctor.proof.x_in_force_key",
    "bridgedoctor.findings.x_exit_code",
    "bridgedoctor.helper.config.x__uids",
    "bridgedoctor.helper.config.x__read_token",
    "bridgedoctor.reset.crypto.x_verify",
    "bridgedoctor_maubot.pending.xǁRegistryǁtake",
    "bridgedoctor_maubot.config.xǁSettingsǁmay_use",
)
# Decorators that only wrap what a function returns (no registration, same signature). mutmut
# leaves every decorated function alone, which would leave most of render/ unmutated; in the
# scratch copy these are applied by an assignment at the end of the module instead (the same
# function at run time, since no module calls them while it is being imported), so the bodies
# are mutated too.
PLAIN_WRAPPERS = ("neutral_message",)
CI_TESTS = (
    "tests/test_pickle.py",
    "tests/test_verdicts.py",
    "tests/test_helper_config.py",
    "tests/test_helper_auth.py",
    "tests/test_pending.py",
    "tests/test_plugin.py",
    "tests/test_reset_guards.py",
    "tests/test_reset_integrity.py",
)


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


def scratch_python(where: Path, first: Path) -> str:
    """An interpreter for the scratch copy that imports bridgedoctor from `first` (the copy, or
    mutmut's mutants) and everything else from this venv. Needed because some code runs in
    `python -I` children (probes/sqlite_child.py), which ignore PYTHONPATH and would otherwise
    import the editable install, not the code under test."""
    venv = where / ".mutation-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    deps = sysconfig.get_paths()["purelib"]
    (site / "00-under-test.pth").write_text(f"{first}\n{deps}\n", "utf-8")
    for name, module in (
        ("bridgedoctor", "bridgedoctor.cli.main"),
        ("bridgedoctor-helper", "bridgedoctor.helper.__main__"),
    ):
        script = venv / "bin" / name
        script.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom {module} import main\nsys.exit(main())\n"
        )
        script.chmod(0o755)
    return str(venv / "bin" / "python")


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
    # Without it the tests that reach the server over its socket (db_host discovery) skip.
    os.environ["BRIDGEDOCTOR_TEST_PG_SOCKET"] = server.socket_dir or ""
    try:
        yield
    finally:
        del os.environ["BRIDGEDOCTOR_TEST_PG"], os.environ["BRIDGEDOCTOR_TEST_PG_SOCKET"]
        cluster.stop()


def without_e2e() -> dict[str, str]:
    """The environment without BRIDGEDOCTOR_REQUIRE_E2E: the scratch copy has no Synapse venv,
    and the e2e tests (ignored, but mutmut runs tests it finds new by node id) must skip. Any
    value, "0" too, would make them fail."""
    return {k: v for k, v in os.environ.items() if k != "BRIDGEDOCTOR_REQUIRE_E2E"}


def pytest(
    python: str, where: Path, tests: list[str], timeout: float = 900, show: bool = False
) -> int:
    """pytest's exit code: 0 passed, 1 a test failed, anything else an error. `show`: print
    the end of pytest's output when it did not pass."""
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = without_e2e()
    try:
        r = subprocess.run(
            cmd, cwd=where, env=env, capture_output=True, timeout=timeout, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        return -1
    if show and r.returncode != 0:
        print(r.stdout.decode("utf-8", "replace")[-4000:])
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
    python = scratch_python(where, where)
    if pytest(python, where, tests, show=True) != 0:
        print("mutation: the guard tests do not pass on the unmutated code; fix that first.")
        return False
    survivors = []
    for m in mutants:
        path = where / m.file
        original = path.read_text("utf-8")
        path.write_text(original.replace(m.find, m.replace, 1), "utf-8")
        started = time.monotonic()
        try:
            code = pytest(python, where, list(m.tests))
        finally:
            path.write_text(original, "utf-8")
        verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error ({code})")
        print(f"  {verdict:<10} {m.id:<38} {time.monotonic() - started:5.1f}s  {m.why}")
        if code != 1:
            survivors.append(m.id)
    print(f"guard mutants: {len(mutants) - len(survivors)} of {len(mutants)} killed")
    return not survivors


# --- mutmut ----------------------------------------------------------------------------------------

DETECTED = {"killed", "timeout", "segfault", "suspicious", "caught by type check"}
UNDETECTED = {"survived", "no tests"}


# A pytest plugin for the mutant runs: the tests that reach a mutant run fastest first (by the
# durations mutmut measured in its first run), so a killed mutant usually costs one quick test.
# The tests run in a directory of their own (empty but for mutmut's config), not in mutmut's
# `mutants/`: a mutant that turns a path or a directory fd into None makes os.listdir, os.walk
# or unlink act on ".", and one such mutant of reset/ emptied `mutants/` (the mutated sources
# and mutmut's records) mid-run.
FASTEST_FIRST = """
import json
import os
import shutil
import tempfile
from pathlib import Path

_HOME = []


def pytest_collection_modifyitems(session, config, items):
    try:
        took = json.loads(Path(_HOME[0], "mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError, IndexError):
        return  # the first run, which measures them
    items.sort(key=lambda item: took.get(item.nodeid, float("inf")))


def pytest_sessionstart(session):
    # A group of its own: a mutant that turns a pid into 0 (sqlite_zygote's fork, then
    # os.kill(0, SIGKILL)) kills its whole process group, which was mutmut's and this script's.
    if os.getpgrp() != os.getpid():  # not already a leader (a session leader may not move)
        os.setpgid(0, 0)
    # Made in the scratch copy, beside mutants/: a test process killed before its
    # sessionfinish (a mutant's kill(0), a timeout) leaves it there, gone with the copy.
    home = os.getcwd()
    _HOME[:] = [home, tempfile.mkdtemp(prefix="bd-mutant-cwd-", dir=os.path.dirname(home))]
    # mutmut's trampolines in a subprocess (the CLI, the SQLite reader) read its config from
    # the directory they run in.
    shutil.copy(Path(_HOME[0], "pyproject.toml"), _HOME[1])
    os.chdir(_HOME[1])


def pytest_sessionfinish(session, exitstatus):
    os.chdir(_HOME[0])
    shutil.rmtree(_HOME[1], ignore_errors=True)
"""


def write_mutmut_config(where: Path, modules: tuple[str, ...], tests: tuple[str, ...]) -> None:
    """mutmut reads [tool.mutmut] from pyproject.toml in its working directory: the scratch copy."""
    sources = ("bridgedoctor", "bridgedoctor_maubot")
    skip = (*sources, "tests", "mutants", "pyproject.toml")
    also = sorted(p.name for p in where.iterdir() if p.name not in skip and p.name[0] != ".")

    def arr(xs: tuple[str, ...] | list[str]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    section = (
        "\n[tool.mutmut]\n"
        f"source_paths = {arr(sources)}\n"
        f"only_mutate = {arr(modules)}\n"
        f"{selection_line(tests)}\n"
        f"pytest_add_cli_args = {arr(('-p', 'no:cacheprovider', '-p', '_fastest_first'))}\n"
        f"also_copy = {arr(also)}\n"
        "use_git_change_detection = false\n"
    )
    pyproject = where / "pyproject.toml"
    pyproject.write_text(pyproject.read_text("utf-8") + section, "utf-8")


def unwrap_decorators(where: Path, modules: tuple[str, ...]) -> None:
    """`@wrapper def f` as `def f` plus `f = wrapper(f)` at the end of the module, for
    PLAIN_WRAPPERS only, in the scratch copy (see PLAIN_WRAPPERS)."""
    for glob in modules:
        for path in sorted(where.glob(glob)):
            text = path.read_text("utf-8")
            after = []
            for wrapper in PLAIN_WRAPPERS:
                decorated = re.compile(rf"^@{wrapper}\n((?:async )?def (\w+)\()", re.M)
                after += [
                    f"{m.group(2)} = {wrapper}({m.group(2)})" for m in decorated.finditer(text)
                ]
                text = decorated.sub(r"\1", text)
            if after:
                note = "# scripts/mutation: the decorators, applied here so that mutmut mutates the bodies"
                path.write_text(text + f"\n\n{note}\n" + "\n".join(after) + "\n", "utf-8")


SELECTION = "pytest_add_cli_args_test_selection = "


def selection_line(tests: tuple[str, ...]) -> str:
    return SELECTION + "[" + ", ".join(f'"{x}"' for x in (*tests, *DESELECT)) + "]"


def run_mutmut(
    where: Path, modules: tuple[str, ...], tests: tuple[str, ...], names: list[str], children: int
) -> list[dict[str, str]]:
    pyproject = where / "pyproject.toml"
    if "[tool.mutmut]" not in pyproject.read_text("utf-8"):
        unwrap_decorators(where, modules)
        write_mutmut_config(where, modules, tests or ("tests",))
    elif tests:
        # A kept copy given other tests: mutmut sees its selection change, drops its results and
        # measures the tests' reach again (new test files are run only when selected).
        text = pyproject.read_text("utf-8")
        line = next(x for x in text.splitlines() if x.startswith(SELECTION))
        pyproject.write_text(text.replace(line, selection_line(tests)), "utf-8")
    (where / "mutants").mkdir(exist_ok=True)
    (where / "mutants" / "_fastest_first.py").write_text(FASTEST_FIRST, "utf-8")
    # Subprocesses started by tests (the CLI, the SQLite reader) must import the mutants too.
    python = scratch_python(where, where / "mutants")
    env = without_e2e()
    cmd = [python, str(Path(__file__).resolve()), "_mutmut", str(children), *names]
    log = where / "mutmut.log"
    with log.open("wb") as out:
        code = subprocess.run(
            cmd, cwd=where, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    results = where / "mutation-results.json"
    if code != 0 or not results.exists():
        tail = log.read_bytes()[-3000:].decode("utf-8", "replace")
        raise SystemExit(f"mutation: mutmut failed (exit {code}); the end of its log:\n{tail}")
    return json.loads(results.read_text("utf-8"))


def _mutmut_in_scratch(children: int, names: list[str]) -> int:
    """Runs inside the scratch copy: mutmut with prose left alone, then every mutant's result."""
    from mutmut.__main__ import cli
    from mutmut.mutation import file_mutation, mutators
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    # Wording is not a guard: string literals with whitespace in them are sentences for people
    # (or SQL), so they are not mutated. Identifiers, codes, keys and paths still are.
    def words_only(node: object) -> Iterator[object]:
        value = getattr(node, "value", "")
        if any(c.isspace() for c in value.strip("'\"")):
            return
        yield from mutators.operator_string(node)  # type: ignore[arg-type]

    ops = file_mutation.mutation_operators
    found = [i for i, (_, op) in enumerate(ops) if op is mutators.operator_string]
    if len(found) != 1:
        raise SystemExit(
            "mutation: this mutmut has no operator_string to patch; install the version pinned "
            "in pyproject.toml's mutation extra."
        )
    ops[found[0]] = (ops[found[0]][0], words_only)  # type: ignore[index]

    try:
        cli(["run", "--max-children", str(children), *names], standalone_mode=False)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    out = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        source = str(meta.relative_to("mutants"))[: -len(".meta")]
        data = SourceFileMutationData(path=source)
        data.load()
        for key, exit_code in data.exit_code_by_key.items():
            if exit_code is None:
                continue  # not asked for in this run (another module of a reused copy)
            status = status_by_exit_code[exit_code]
            diff = get_diff_for_mutant(key, path=source) if status in UNDETECTED else ""
            out.append({"module": source, "name": key, "status": status, "diff": diff})
    Path("mutation-results.json").write_text(json.dumps(out, indent=1), "utf-8")
    return 0


UNTRACKED = "untracked-results.json"


def run_untracked(
    where: Path,
    results: list[dict[str, str]],
    chosen: tuple[str, ...],
    tests: list[str],
    names: list[str] | None = None,
) -> None:
    """The chosen modules' "no tests" mutants, each run against `tests` by hand.

    mutmut learns which tests reach a function from its trampolines in the test process, so a
    function that runs only in a child (the SQLite reader, the scan worker, the CLI started as a
    command) has "no tests" and none of its mutants run. The trampolines in the child do obey
    MUTANT_UNDER_TEST, so here each such mutant gets one pytest run with it set: killed when a
    test fails, survived when all pass. The results are kept in the copy (UNTRACKED) and stand
    in for mutmut's "no tests" in later reports of the same copy; a mutant already detected
    there, or judged equivalent, is not run again.
    """
    done = _untracked_done(where)
    equivalent = load_equivalent()
    todo = [
        r for r in results
        if r["status"] == "no tests" and any(fnmatch(r["module"], g) for g in chosen)
        and done.get(r["name"]) not in DETECTED and mutant_key(r) not in equivalent
        and (not names or any(fnmatch(r["name"], n) for n in names))
    ]  # fmt: skip
    if not todo:
        return
    python = str(where / ".mutation-venv" / "bin" / "python")
    cwd = where / "mutants"
    shutil.copytree(where / "tests", cwd / "tests", dirs_exist_ok=True)  # the current tests
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_fastest_first",
           *tests, *DESELECT]  # fmt: skip
    env = {**without_e2e(), "MUTANT_UNDER_TEST": ""}
    started = time.monotonic()
    clean = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, start_new_session=True)
    took = time.monotonic() - started
    if clean.returncode != 0:
        tail = clean.stdout.decode("utf-8", "replace")[-3000:]
        raise SystemExit(f"mutation: the --untracked tests fail without a mutant:\n{tail}")
    timeout = max(60.0, 5 * took)
    print(f"untracked: {len(todo)} mutants, {took:.0f} s per clean run", flush=True)
    for n, r in enumerate(todo, 1):
        code = _alone(cmd, cwd, {**env, "MUTANT_UNDER_TEST": r["name"]}, timeout)
        if code in (4, 5):  # a usage error, no tests collected: the selection is wrong
            raise SystemExit(f"mutation: pytest exited {code} for {r['name']}; check --untracked.")
        # 1: a test failed; 3: pytest's internal error (a mutant broke it); < 0: killed by a
        # signal (a mutant that kills its own group). Anything else (2: interrupted) is not
        # counted as a kill: "error", left for a look.
        killed = code == 1 or code == 3 or (code is not None and code < 0)
        done[r["name"]] = (
            "timeout" if code is None else "survived" if code == 0 else "killed" if killed
            else "error"
        )  # fmt: skip
        (where / UNTRACKED).write_text(json.dumps(done, indent=1), "utf-8")
        print(f"untracked {n}/{len(todo)} {done[r['name']]}: {r['name']}", flush=True)


def _alone(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> int | None:
    """The exit code of `cmd` run in a session of its own (None when it timed out: then it is
    killed with everything it started, the SQLite fork server of a mutant included)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _untracked_done(where: Path) -> dict[str, str]:
    try:
        return dict(json.loads((where / UNTRACKED).read_text("utf-8")))
    except (OSError, ValueError):
        return {}


def with_untracked(where: Path, results: list[dict[str, str]]) -> list[dict[str, str]]:
    """mutmut's "no tests" replaced by what an --untracked run of the same copy found."""
    done = _untracked_done(where)
    return [
        {**r, "status": done[r["name"]]} if r["status"] == "no tests" and r["name"] in done else r
        for r in results
    ]


def mutant_key(r: dict[str, str]) -> tuple[str, str, str, str]:
    """What identifies a mutant across runs and unrelated edits: module, function, and the
    lines it changes (mutmut's numbers shift whenever a function changes)."""
    function = r["name"].rpartition(".")[2].rsplit("__mutmut_", 1)[0]
    lines = [x for x in r["diff"].splitlines() if not x.startswith(("---", "+++"))]
    removed = "\n".join(x[1:].strip() for x in lines if x.startswith("-"))
    added = "\n".join(x[1:].strip() for x in lines if x.startswith("+"))
    return r["module"], function, removed, added


def load_equivalent() -> dict[tuple[str, str, str, str], str]:
    if not EQUIVALENT.exists():
        return {}
    entries = tomllib.loads(EQUIVALENT.read_text("utf-8")).get("equivalent", [])
    return {(e["module"], e["function"], e["removed"].strip(), e["added"].strip()): e["why"]
            for e in entries}  # fmt: skip


def report(results: list[dict[str, str]], show: int) -> bool:
    """Prints the score per module; True when every undetected mutant is judged equivalent."""
    equivalent = load_equivalent()
    by_module: dict[str, dict[str, int]] = {}
    unjudged = []
    for r in results:
        row = by_module.setdefault(r["module"], {"total": 0, "detected": 0, "equivalent": 0})
        row["total"] += 1
        if r["status"] in DETECTED:
            row["detected"] += 1
        elif r["status"] in UNDETECTED and mutant_key(r) in equivalent:
            row["equivalent"] += 1
        elif r["status"] in UNDETECTED:
            unjudged.append(r)
    print(f"{'module':<42} {'mutants':>7} {'killed':>6} {'equiv':>5} {'left':>5} {'score':>6}")
    totals = {"total": 0, "detected": 0, "equivalent": 0}
    for module, row in sorted(by_module.items()):
        for k in totals:
            totals[k] += row[k]
        print(line(module, row))
    print(line("all", totals))
    for r in unjudged[:show]:
        print(f"\n{r['status']}: {r['name']}\n{r['diff']}")
    if len(unjudged) > show:
        print(f"\n... and {len(unjudged) - show} more undetected mutants.")
    return not unjudged


def line(module: str, row: dict[str, int]) -> str:
    counted = row["total"] - row["equivalent"]
    left = counted - row["detected"]
    score = 100.0 * row["detected"] / counted if counted else 100.0
    return (
        f"{module:<42} {row['total']:>7} {row['detected']:>6} {row['equivalent']:>5} "
        f"{left:>5} {score:>5.1f}%"
    )


# --- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("guards", help="the hand-written guard mutants; each must be killed")
    g.add_argument("ids", nargs="*", help="only these mutants (ids from mutation-guards.toml)")
    r = sub.add_parser("run", help="mutmut over the safety-critical modules; score per module")
    r.add_argument("modules", nargs="*", help="only these module globs (default: all of them)")
    r.add_argument(
        "--tests",
        nargs="+",
        help="only these tests (files or node ids; default all but the slow suites): quicker, "
        "and a lower bound, since a mutant only other tests would kill counts as surviving; "
        "with --scratch, a new selection (mutmut then measures that copy again)",
    )
    r.add_argument(
        "--scratch",
        type=Path,
        help="reuse a copy kept by an earlier run (--keep): its mutants and mutmut's record of "
        "which tests reach which function stay, the tests are refreshed from the working tree",
    )
    r.add_argument(
        "--survivors",
        action="store_true",
        help="with --scratch: run again only the mutants of these modules that the copy's last "
        "run left undetected and not judged equivalent (after adding tests)",
    )
    r.add_argument(
        "--names",
        nargs="+",
        metavar="GLOB",
        help="only the mutants whose mutmut names match these globs, e.g. "
        "'bridgedoctor.reset.dbio.x_file_sum__mutmut_*' or "
        "'bridgedoctor.reset.dbio.xǁPgDbǁopen__mutmut_*' (methods are xǁClassǁname); "
        "the modules still choose which results are reported",
    )
    r.add_argument(
        "--untracked",
        nargs="+",
        metavar="TEST",
        help='then run each mutant mutmut left at "no tests" (functions reached only in a '
        "child process: the SQLite reader, the scan worker, the CLI run as a command) against "
        "these tests, one pytest per mutant (with --names, only those mutants); with --scratch "
        "and without --survivors/--tests, only that (mutmut is not run again)",
    )
    c = sub.add_parser("ci", help="the bounded run of .ci/run (guards, then guard functions)")
    for sp in (r, c):
        sp.add_argument("--children", type=int, default=2, help="mutants run at once (default 2)")
        sp.add_argument("--show", type=int, default=40, help="undetected mutants to print")
        sp.add_argument(
            "--keep", action="store_true", help="keep the scratch copy (mutmut browse)"
        )
    hidden = sub.add_parser("_mutmut")  # runs inside the scratch copy
    hidden.add_argument("children", type=int)
    hidden.add_argument("names", nargs="*")
    args = p.parse_args(argv)
    if args.command == "_mutmut":
        return _mutmut_in_scratch(args.children, args.names)
    reuse = getattr(args, "scratch", None)
    where = refresh_tests(reuse) if reuse else scratch_copy()
    keep = getattr(args, "keep", False) or bool(reuse)
    try:
        with postgres():
            if args.command == "guards":
                return 0 if run_guards(args.ids, where) else 1
            if args.command == "run":
                # Mutants are made for every safety-critical module at once (so a kept copy
                # serves the next module without collecting the tests' reach again); the globs
                # choose which of them run.
                chosen = tuple(args.modules) or SAFETY_CRITICAL
                names = [module_names(g) for g in args.modules]
                if args.names:  # mutant-name globs, passed through to mutmut as they are
                    names = list(args.names)
                if args.survivors:
                    names = survivors(where, chosen)
                tests = tuple(args.tests or ())
                if reuse and args.untracked and not (args.survivors or tests):
                    results = last_results(where)
                else:
                    results = run_mutmut(where, SAFETY_CRITICAL, tests, names, args.children)
                if args.untracked:
                    run_untracked(where, results, chosen, args.untracked, args.names)
                results = with_untracked(where, results)
                results = [x for x in results if any(fnmatch(x["module"], g) for g in chosen)]
                return 0 if report(results, args.show) else 1
            guards_ok = run_guards([], where)
            modules = tuple(sorted({module_file(f) for f in CI_FUNCTIONS}))
            names = [f"{f}__mutmut_*" for f in CI_FUNCTIONS]
            results = run_mutmut(where, modules, CI_TESTS, names, args.children)
            results = [x for x in results if x["name"].rsplit("__mutmut_", 1)[0] in CI_FUNCTIONS]
            missing = set(CI_FUNCTIONS) - {x["name"].rsplit("__mutmut_", 1)[0] for x in results}
            if missing:  # renamed or moved: the list must follow the code
                print("mutation: CI_FUNCTIONS without mutants:", *sorted(missing), sep="\n  ")
                return 1
            return 0 if report(results, args.show) and guards_ok else 1
    finally:
        if keep:
            print(f"scratch copy kept: {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


def survivors(where: Path, chosen: tuple[str, ...]) -> list[str]:
    """The mutants of `chosen` a kept copy's last run left undetected and not judged equivalent."""
    last = with_untracked(where, last_results(where))
    equivalent = load_equivalent()
    names = [
        r["name"]
        for r in last
        if r["status"] in UNDETECTED
        and any(fnmatch(r["module"], g) for g in chosen)
        and mutant_key(r) not in equivalent
    ]
    if not names:
        raise SystemExit("mutation: no undetected mutant left in these modules.")
    return names


def last_results(where: Path) -> list[dict[str, str]]:
    try:
        return list(json.loads((where / "mutation-results.json").read_text("utf-8")))
    except (OSError, ValueError):
        raise SystemExit(f"mutation: {where} has no results of an earlier run.") from None


def module_names(glob: str) -> str:
    """bridgedoctor/reset/*.py -> bridgedoctor.reset.*, the mutmut names of its mutants."""
    return glob.removesuffix(".py").replace("/", ".").removesuffix(".*") + ".*"


def refresh_tests(where: Path) -> Path:
    """A kept scratch copy with the working tree's current tests (new tests kill mutants too)."""
    if not (where / "mutants").is_dir():
        raise SystemExit(f"mutation: {where} is not a scratch copy kept by scripts/mutation run.")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "tests"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(os.fsdecode(raw))
        if (REPO / rel).is_file():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, where / rel)
    return where


def module_file(function: str) -> str:
    """bridgedoctor.helper.server.xǁHelperǁ_answer -> bridgedoctor/helper/server.py"""
    return function.rpartition(".")[0].replace(".", "/") + ".py"


if __name__ == "__main__":
    raise SystemExit(main())
