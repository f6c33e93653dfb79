"""`bridgedoctor-helper` itself (helper/__main__.py), in-process: its arguments, exit codes and
sentences, and serving a real socket until SIGTERM. tests/test_helper_config.py runs the same
console script as a process; mutation testing sees only what runs in-process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridgedoctor import __version__
from bridgedoctor.helper import __main__ as helper_main
from bridgedoctor.helper import install
from bridgedoctor.helper.audit import LOGGER_NAME
from bridgedoctor.protocol import decode_response
from tests.support.cli import choose_from
from tests.support.reset_env import RESET_UNIT, Systemd
from tests.test_helper_config import TOKEN, site, write
from tests.test_reset_recovery import interrupted

__all__ = ["site"]  # a fixture used by name below

HELP = """\
usage: bridgedoctor-helper [-h] [--config CONFIG] [--version] {install,uninstall} ...

Answer bridgedoctor's maubot plugin over a local Unix socket.

positional arguments:
  {install,uninstall}
    install            set the helper up on this MDAD host (idempotent; docs/helper.md)
    uninstall          stop the helper and remove what install added

options:
  -h, --help           show this help message and exit
  --config CONFIG      YAML config file
  --version            show program's version number and exit
"""
INSTALL_HELP = """\
usage: bridgedoctor-helper install [-h] [--root ROOT] [--allow-reset | --no-allow-reset]

Write the token, config, unit and tmpfiles entry, start the helper, check that it answers, and \
print the vars.yml lines for maubot and the plugin settings. Running it again changes nothing.

options:
  -h, --help            show this help message and exit
  --root ROOT           MDAD base data path
  --allow-reset, --no-allow-reset
                        turn resets from the room on (config and unit drop-in) or off; default: \
as before
"""


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """main() sets the helper's logger up on the stderr of the moment; put it back after."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def exits(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        helper_main.main(argv)
    return e.value.code  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("argv", "shown"), [(["--help"], HELP), (["install", "--help"], INSTALL_HELP)]
)
def test_the_helper_explains_itself(
    argv: list[str],
    shown: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert exits(argv) == 0
    assert capsys.readouterr() == (shown, "")


def test_the_helper_says_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert exits(["--version"]) == 0
    assert capsys.readouterr() == (f"bridgedoctor-helper {__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--config"], "argument --config: expected one argument"),
        (["install", "--allow-reset=yes"],
         "argument --allow-reset/--no-allow-reset: ignored explicit argument 'yes'"),
        (["install", "--root"], "argument --root: expected one argument"),
        (["uninstall", "--root", "/x"], "unrecognized arguments: --root /x"),
        (["reinstall"],
         "argument {install,uninstall}: invalid choice: 'reinstall' "
         f"(choose from {choose_from('install', 'uninstall')})"),
    ],
)  # fmt: skip
def test_a_bad_argument_is_one_sentence_and_ex_config(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exits(argv) == 78
    assert capsys.readouterr() == ("", f"bridgedoctor-helper: {said}.\n")


@pytest.mark.parametrize("extra", [[], ["--allow-reset"], ["--no-allow-reset"]])
def test_install_is_handed_its_root_and_its_exit_code_is_main_s(
    tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The real install, up to its first look at the host: a root that is not there (as root)
    or not being root is refused before anything is written. What it does past that runs under
    real systemd (tests/systemd/test_install.py: --allow-reset, none, --no-allow-reset)."""
    nowhere = tmp_path / "nowhere"
    assert helper_main.main(["install", "--root", str(nowhere), *extra]) == 2
    err = capsys.readouterr().err
    if os.geteuid() == 0:
        assert err == (
            f"bridgedoctor-helper install: {nowhere} does not exist: is this an MDAD host? "
            "Pass --root DIR.\n"
        )
    else:
        assert err.startswith("bridgedoctor-helper install: run install as root")


def test_install_looks_at_mdad_s_root_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0 or Path("/matrix").exists():
        pytest.skip("needs root, on a host that is not an MDAD host")
    assert helper_main.main(["install"]) == 2
    assert "/matrix does not exist: is this an MDAD host?" in capsys.readouterr().err


def test_uninstall_with_nothing_installed_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0 or install.STATE.exists():
        pytest.skip("needs root, on a host without a bridgedoctor install")
    assert helper_main.main(["uninstall"]) == 0
    out = capsys.readouterr().out
    assert out == f"Nothing to remove: {install.STATE} does not list anything install wrote.\n"


def test_without_a_config_the_default_one_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    if Path("/etc/bridgedoctor/helper.yaml").exists():
        pytest.skip("this host has a helper config")
    assert helper_main.main([]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        "bridgedoctor-helper: cannot read the config file /etc/bridgedoctor/helper.yaml"
    )
    assert err.count("\n") == 1


def test_a_bad_config_is_one_sentence_and_ex_config(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "helper.yaml").write_text("- a\n- b\n")
    assert helper_main.main(["--config", str(site / "helper.yaml")]) == 78
    assert capsys.readouterr() == (
        "",
        f"bridgedoctor-helper: the config file {site / 'helper.yaml'} must be a mapping of "
        "settings.\n",
    )


def test_a_socket_path_taken_by_a_file_is_one_sentence_and_ex_config(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "run").mkdir()
    (site / "run" / "h.sock").write_text("keep me")
    assert helper_main.main(["--config", str(write(site, ""))]) == 78
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"bridgedoctor-helper: {site / 'run' / 'h.sock'} exists and is not a")
    assert (site / "run" / "h.sock").read_text() == "keep me"


def main_beside(config: Path, beside: Callable[[threading.Event], None]) -> int:
    """main's exit code, with `beside` running in a thread meanwhile; the event it is given is
    set once main has returned (so it can stop waiting for a helper that never serves)."""
    returned = threading.Event()
    t = threading.Thread(target=beside, args=(returned,))
    t.start()
    try:
        return helper_main.main(["--config", str(config)])
    finally:
        returned.set()
        t.join()


def test_the_helper_serves_until_sigterm_then_exits_0(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(site, f"systemd_dir: {site / 'units'}\n")
    sock = site / "run" / "h.sock"
    answers: list[object] = []

    def client(returned: threading.Event) -> None:
        deadline = time.monotonic() + 30
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                while s.connect_ex(str(sock)) != 0:
                    if returned.is_set() or time.monotonic() > deadline:
                        return  # main ended without serving
                    time.sleep(0.05)
                s.sendall(json.dumps({"v": 1, "token": TOKEN, "op": "list"}).encode() + b"\n")
                answers.append(decode_response(s.makefile("rb").readline()))
        finally:
            if not returned.is_set():  # SIGTERM's handler is the helper's only while it serves
                os.kill(os.getpid(), signal.SIGTERM)

    assert main_beside(config, client) == 0
    assert answers == [{"bridges": []}]
    assert not sock.exists()
    out, err = capsys.readouterr()
    assert out == ""
    assert f"INFO listening on {sock} (max_concurrent=" in err
    assert f"request op=list bridge=- uid={os.getuid()}" in err


def test_ctrl_c_before_the_helper_serves_ends_it_quietly(
    site: Path, systemd: Systemd, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the helper is still starting (here: recovering an interrupted reset, whose
    unit takes its time to start again) is not a traceback: 'interrupted', exit 0."""
    interrupted(site, "reset", ["stop", "backup"])
    systemd.set(RESET_UNIT, "inactive")
    systemd.hang_start(RESET_UNIT)
    config = write(site, f"systemd_dir: {site / 'units'}\nallow_reset: true\n")

    def ctrl_c(returned: threading.Event) -> None:
        deadline = time.monotonic() + 60
        while f"start {RESET_UNIT}" not in systemd.calls() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not returned.is_set():
            os.kill(os.getpid(), signal.SIGINT)
        systemd.hang_start(RESET_UNIT, False)

    assert main_beside(config, ctrl_c) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("INFO interrupted\n"), err
    assert "listening on" not in err and "Traceback" not in err
    assert not (site / "run" / "h.sock").exists()
