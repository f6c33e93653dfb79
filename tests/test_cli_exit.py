"""How the CLI process ends: after a check, at once (no interpreter teardown) yet with its whole
answer written, its exit code, and no reader process of ours left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import outside
from tests.support.fleet import Host
from tests.support.store import StoreSpec


@pytest.fixture
def fleet(tmp_path: Path) -> Host:
    host = Host.at(tmp_path)
    for bridge in ("whatsapp", "signal", "gmessages"):
        host.add(bridge, StoreSpec(bridge), engine="sqlite")
    return host


def _env() -> dict[str, str]:
    """As a host runs it: stdout buffered (PYTHONUNBUFFERED, set on some machines, would hide
    an answer left unflushed)."""
    return {k: v for k, v in outside.cli_env().items() if k != "PYTHONUNBUFFERED"}


def _cli(*argv: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridgedoctor.cli.main", *argv], env=_env(), text=True, **kw
    )


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_check_ends_with_its_whole_answer_its_code_and_no_process_left(fleet: Host) -> None:
    """SQLite stores are read by forks of a fork server; stopping it is an atexit handler,
    which the quick exit must still run: once the CLI is reaped, nothing of its process group
    is left. Its answer (block-buffered into a pipe) arrives whole."""
    p = _cli(
        "check", "all", "--json", *fleet.args(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    out, err = p.communicate(timeout=120)
    gone = _group_gone(p.pid)  # at once: a server left to notice our end by itself lags
    assert out.endswith("}\n")
    report = json.loads(out)
    assert sorted(r["bridge"] for r in report["bridges"]) == ["gmessages", "signal", "whatsapp"]
    assert p.returncode == (0 if all(r["status"] == "ok" for r in report["bridges"]) else 1), err
    assert gone, "a process of the CLI's outlived it"


@pytest.mark.parametrize("argv", [["check", "all", "--json"], ["check", "nosuchbridge"]])
def test_a_check_whose_reader_went_away_ends_with_python_s_code_and_no_traceback(
    fleet: Host, argv: list[str]
) -> None:
    """A long answer fails while it is printed, a short one only when flushed at the end."""
    r, w = os.pipe()
    os.close(r)  # nobody reads the answer
    p = _cli(*argv, *fleet.args(), stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 120 and "Traceback" not in err


def _run_with(tmp_path: Path, command: str, body: str) -> tuple[int, str]:
    """run() with main replaced by `body` (which gets `out`, a path to write to)."""
    code = "\n".join(
        [
            "import sys, threading, time",
            "from bridgedoctor.cli import main as cli",
            "out = sys.argv[2]",
            textwrap.dedent(body),
            "cli.main = main",
            'sys.argv = ["bridgedoctor", sys.argv[1], "x"]',
            "cli.run()",
        ]
    )
    p = subprocess.run(
        [sys.executable, "-c", code, command, str(tmp_path / "out")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stderr


@pytest.mark.parametrize(
    "command,finalized", [("check", False), ("logs", False), ("backups", True)]
)
def test_only_a_read_only_command_skips_the_teardown(
    tmp_path: Path, command: str, finalized: bool
) -> None:
    """check and logs end without the interpreter's teardown (what finalizing their modules
    would do is never done); a reset, restore or apply (here `backups`) is finalized as usual:
    whatever it left to finalize, a file written and never closed, is."""
    code, err = _run_with(
        tmp_path,
        command,
        """
        class Finalized:
            def __del__(self, open=open):  # builtins may be gone by then
                with open(out + ".del", "w") as f:
                    f.write("x")

        def main(argv):
            global kept, flag
            kept = open(out, "w")
            kept.write("x")
            flag = Finalized()
            return 1
        """,
    )
    assert code == 1, err
    assert (tmp_path / "out.del").exists() is finalized
    if finalized:
        assert (tmp_path / "out").read_text() == "x"


def test_a_broken_pipe_in_any_command_is_python_s_code_not_a_traceback(tmp_path: Path) -> None:
    code, err = _run_with(
        tmp_path,
        "backups",
        """
        def main(argv):
            raise BrokenPipeError(32, "Broken pipe")
        """,
    )
    assert code == 120 and "Traceback" not in err


def test_a_check_with_a_thread_still_running_ends_the_usual_way(tmp_path: Path) -> None:
    code, err = _run_with(
        tmp_path,
        "check",
        """
        def late():
            time.sleep(0.3)
            with open(out, "w") as f:
                f.write("x")

        def main(argv):
            threading.Thread(target=late).start()
            return 1
        """,
    )
    assert code == 1, err
    assert (tmp_path / "out").read_text() == "x"  # the exit waited for the thread
