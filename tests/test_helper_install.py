"""What `bridgedoctor-helper install` writes, and when it leaves a file alone, on real files.

The whole command (systemctl, the matrix user, the socket answering) runs under real systemd in
tests/systemd/test_install.py; this file holds the parts that decide what is written, in-process,
so that a careless edit of them fails in seconds.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridgedoctor.helper import install
from bridgedoctor.helper.config import parse
from bridgedoctor.helper.install import Files, Host, InstallError, Report
from tests.test_helper_config import with_umask

GID = 4242


def host(root: Path, **kw: object) -> Host:
    base: dict = dict(
        root=root,
        uid=991,
        gid=992,
        db_host="/matrix/postgres/run",
        db_note="the socket directory /matrix/postgres/run",
        prefix=Path("/srv/venvs/bd"),
    )
    base.update(kw)
    return Host(**base)


def test_the_unit_runs_this_venv_and_differs_from_the_packaged_one_in_nothing_else() -> None:
    packaged = install.packaged("bridgedoctor-helper.service").splitlines()
    ours = install.unit_text(Path("/srv/venvs/bd")).splitlines()
    assert len(ours) == len(packaged)
    changed = [(a, b) for a, b in zip(packaged, ours, strict=True) if a != b]
    assert changed, "the packaged unit names /opt/bridgedoctor"
    for a, b in changed:
        assert b == a.replace("/opt/bridgedoctor/", "/srv/venvs/bd/")
    assert any(
        b.startswith("ExecStart=/srv/venvs/bd/bin/bridgedoctor-helper ") for _, b in changed
    )
    assert "/opt/bridgedoctor/" not in "\n".join(ours)


@pytest.mark.parametrize("allow_reset", [True, False])
def test_the_config_written_is_what_was_found_and_the_helper_accepts_it(
    tmp_path: Path, allow_reset: bool
) -> None:
    gid = os.getgid()  # a group this host has: the helper checks socket_group
    text = install.config_text(host(tmp_path, gid=gid), allow_reset)
    raw = YAML(typ="safe", pure=True).load(text)
    assert raw == {
        "root": str(tmp_path),
        "db_host": "/matrix/postgres/run",
        "token_file": "/etc/bridgedoctor/token",
        "socket": "/run/bridgedoctor/helper.sock",
        "socket_group": gid,
        "socket_mode": 0o660,
        "allowed_uids": [991],
        "allow_reset": allow_reset,
    }
    assert "# MDAD's PostgreSQL: the socket directory /matrix/postgres/run." in text
    # The helper's own parser takes it as it is (with a token file that exists here).
    token = tmp_path / "token"
    token.write_text("a" * 64 + "\n")
    token.chmod(0o640)
    cfg = parse({**raw, "token_file": str(token)}, tmp_path / "helper.yaml")
    assert cfg.allowed_uids == frozenset({991}) and cfg.socket_gid == gid
    assert cfg.socket_mode == 0o660 and cfg.allow_reset is allow_reset
    assert cfg.root == tmp_path and cfg.db_host == "/matrix/postgres/run"


def files_at(tmp_path: Path) -> tuple[Files, Report, Path]:
    report = Report()
    state = tmp_path / "var" / "lib" / "bridgedoctor" / "install.json"  # none of it there yet
    return Files(report, state), report, state


def test_a_missing_file_is_written_with_its_mode_and_group_and_recorded(tmp_path: Path) -> None:
    files, report, state = files_at(tmp_path)
    path = tmp_path / "etc" / "bd" / "helper.yaml"
    assert files.put(path, "root: /matrix\n", 0o640, GID) is True
    st = path.stat()
    assert path.read_text() == "root: /matrix\n"
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (0, GID)
    assert not list(path.parent.glob(".*bd-new"))  # written beside, then moved into place
    assert report.changed == [str(path)] and report.kept == []
    # Both directories it made are recorded, so uninstall can remove them again.
    assert files.state[str(tmp_path / "etc")] == "dir"
    assert files.state[str(tmp_path / "etc" / "bd")] == "dir"
    assert files.ours(path)
    files.save()
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    again = Files(Report(), state)
    assert again.state == files.state and again.ours(path)
    files.put(tmp_path / "a.conf", "x\n")  # recorded after, listed first
    files.save()  # again, into the directory it made
    # For the admin to read: one path a line, in order.
    lines = state.read_text().splitlines()
    assert lines[:2] == ["{", '  "files": {']
    paths = [x.split('"')[1] for x in lines[2:-2]]
    assert paths == sorted(files.state) and len(paths) == 4


def test_by_default_a_file_is_root_s_and_readable_and_a_directory_searchable(
    tmp_path: Path,
) -> None:
    files, _, _ = files_at(tmp_path)
    path = tmp_path / "made" / "bridgedoctor-helper.service"
    with_umask(0o077, lambda: files.put(path, "[Unit]\n"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.stat().st_gid == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755 and path.parent.stat().st_gid == 0


def test_a_file_that_is_not_text_is_kept_not_read_as_an_error(tmp_path: Path) -> None:
    files, report, _ = files_at(tmp_path)
    path = tmp_path / "helper.yaml"
    path.write_bytes(b"root: /m\xe4trix\n")  # latin-1, written by someone else
    assert files.put(path, "root: /matrix\n") is False
    assert path.read_bytes() == b"root: /m\xe4trix\n"
    assert report.kept == [f"{path} (kept: changed by you, or not written by install)"]


def test_the_same_text_again_writes_nothing(tmp_path: Path) -> None:
    files, report, _ = files_at(tmp_path)
    path = tmp_path / "unit.service"
    files.put(path, "[Unit]\n")
    before = path.stat().st_ino
    assert files.put(path, "[Unit]\n") is False
    assert path.stat().st_ino == before
    assert report.kept == [f"{path} (unchanged)"]


def test_a_file_the_admin_changed_is_kept_and_named(tmp_path: Path) -> None:
    files, report, _ = files_at(tmp_path)
    path = tmp_path / "helper.yaml"
    files.put(path, "allow_reset: false\n")
    path.write_text("allow_reset: false\nnaming: legacy\n")  # the admin's edit
    assert files.ours(path) is False
    assert files.put(path, "allow_reset: true\n") is False
    assert path.read_text() == "allow_reset: false\nnaming: legacy\n"
    assert report.kept == [f"{path} (kept: changed by you, or not written by install)"]


def test_a_file_install_did_not_write_is_kept(tmp_path: Path) -> None:
    files, report, _ = files_at(tmp_path)
    path = tmp_path / "tmpfiles.conf"
    path.write_text("d /run/other 0755 root root -\n")
    assert files.put(path, "d /run/bridgedoctor 0750 root root -\n") is False
    assert path.read_text() == "d /run/other 0755 root root -\n"
    assert report.changed == []


def test_a_file_install_wrote_and_nobody_changed_is_brought_up_to_date(tmp_path: Path) -> None:
    files, report, _ = files_at(tmp_path)
    path = tmp_path / "helper.yaml"
    files.put(path, "allow_reset: false\n", 0o640, GID)
    assert files.put(path, "allow_reset: true\n", 0o640, GID) is True
    assert path.read_text() == "allow_reset: true\n"
    assert files.state[str(path)] == install._sha("allow_reset: true\n")
    assert report.changed == [str(path), str(path)]


@pytest.mark.parametrize(
    ("content", "state"),
    [
        ("{not json", {}),
        ('{"other": {}}', {}),
        ('["files"]', {}),
        (None, {}),
        ('{"files": {"/etc/x": "dir"}}', {"/etc/x": "dir"}),
    ],
)
def test_an_unreadable_record_means_nothing_is_ours(
    tmp_path: Path, content: str | None, state: dict[str, str]
) -> None:
    record = tmp_path / "install.json"
    if content is not None:
        record.write_text(content)
    assert Files(Report(), record).state == state


def test_what_cannot_be_read_as_text_is_not_ours(tmp_path: Path) -> None:
    files, _, _ = files_at(tmp_path)
    binary = tmp_path / "token"
    binary.write_bytes(b"\xff\xfe")
    files.state[str(binary)] = install._sha("\ufffd\ufffd")
    assert files.ours(binary) is False
    directory = tmp_path / "dir"
    directory.mkdir()
    files.state[str(directory)] = "dir"
    assert files.ours(directory) is False
    assert files.ours(tmp_path / "absent") is False


def test_an_existing_directory_is_not_recorded(tmp_path: Path) -> None:
    files, _, _ = files_at(tmp_path)
    files.mkdir(tmp_path, 0o750, GID)
    assert files.state == {}
    assert (tmp_path.stat().st_uid, tmp_path.stat().st_gid) != (0, GID)
    made = tmp_path / "a"
    files.mkdir(made, 0o750, GID)
    st = made.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and (st.st_uid, st.st_gid) == (0, GID)


def test_the_report_names_what_changed_and_only_what_was_kept_against_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = Report()
    report.note("/etc/bridgedoctor/helper.yaml", True)
    report.note("restarted bridgedoctor-helper.service", True)
    report.note("/etc/bridgedoctor/token (kept)", False)
    report.note("/etc/x (unchanged)", False)
    report.note("/etc/y (kept: changed by you, or not written by install)", False)
    report.note("/etc/z (kept: changed since install)", False)
    install._print_report(host(tmp_path), report)
    out = capsys.readouterr().out
    assert f"MDAD root: {tmp_path}; matrix user: uid 991, gid 992" in out
    assert "PostgreSQL: the socket directory /matrix/postgres/run" in out
    assert (
        "Changed:\n  /etc/bridgedoctor/helper.yaml\n  restarted bridgedoctor-helper.service\n"
        in out
    )
    assert (
        "Left alone:\n  /etc/y (kept: changed by you, or not written by install)\n"
        "  /etc/z (kept: changed since install)\n" in out
    )
    assert "token (kept)" not in out and "/etc/x" not in out
    install._print_report(host(tmp_path), Report())
    out = capsys.readouterr().out
    assert "Nothing changed: everything was already in place." in out
    assert "Changed:" not in out and "Left alone:" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_install_refuses_a_host_without_mdads_matrix_user(tmp_path: Path) -> None:
    try:
        pwd.getpwnam("matrix")
        pytest.skip("this machine has a matrix user")
    except KeyError:
        pass
    with pytest.raises(InstallError) as e:
        install.detect(tmp_path)
    assert str(e.value) == "there is no 'matrix' user: MDAD creates it and runs maubot as it."


def test_install_refuses_a_root_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InstallError, match="does not exist: is this an MDAD host"):
        install.detect(tmp_path / "nowhere")
    assert install.run("install", tmp_path / "nowhere", None) == 2
    err = capsys.readouterr().err
    assert err.startswith("bridgedoctor-helper install: ") and "Pass --root DIR." in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to drop from root to another user")
@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_install_and_uninstall_refuse_without_root(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.seteuid(65534)  # the real uid stays root, so the finally can take it back
    try:
        code = install.run(command, tmp_path, None)
    finally:
        os.seteuid(0)
    assert code == 2
    assert capsys.readouterr().err == f"bridgedoctor-helper {command}: run {command} as root" + (
        " (it writes /etc and starts a system service).\n" if command == "install" else ".\n"
    )


def root_user() -> str:
    return pwd.getpwuid(0).pw_name


@pytest.fixture
def shown_venv() -> Iterator[Path]:
    """A venv with the helper's console script, in a directory the unit does not hide (not
    /tmp, which PrivateTmp=yes replaces for the helper)."""
    prefix = Path(tempfile.mkdtemp(prefix="bd-venv-", dir="/dev/shm"))
    (prefix / "bin").mkdir()
    (prefix / "bin" / "bridgedoctor-helper").write_text("#!/bin/sh\n")
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="install runs as root")
@pytest.mark.parametrize(
    "hidden",
    ["/root", "/root/venv", "/home/admin/venv", "/tmp/venv", "/var/tmp/venv", "/run/user/0/v"],
)
def test_install_refuses_a_venv_the_unit_hides(tmp_path: Path, hidden: str) -> None:
    with pytest.raises(InstallError) as e:
        install.detect(tmp_path, root_user(), Path(hidden))
    assert str(e.value) == (
        f"the venv {hidden} is under a directory the unit hides from the helper; install "
        "bridgedoctor into a venv under /opt (python3 -m venv /opt/bridgedoctor)."
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="install runs as root")
def test_install_refuses_a_venv_without_the_helper(tmp_path: Path, shown_venv: Path) -> None:
    (shown_venv / "bin" / "bridgedoctor-helper").unlink()
    with pytest.raises(InstallError) as e:
        install.detect(tmp_path, root_user(), shown_venv)
    assert (
        str(e.value) == f"run install with the venv's own bridgedoctor-helper ({shown_venv}/bin)."
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="install runs as root")
def test_install_looks_at_the_venv_it_runs_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker
    try:
        h = install.detect(tmp_path, root_user())
    except InstallError as e:  # this venv is under a hidden directory, or has no script
        assert f"venv {sys.prefix} is under" in str(e) or f"({sys.prefix}/bin)" in str(e)
    else:
        assert h.prefix == Path(sys.prefix)


@pytest.mark.skipif(os.geteuid() != 0, reason="install runs as root")
def test_install_finds_mdads_socket_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown_venv: Path
) -> None:
    prefix = shown_venv
    run = tmp_path / "postgres" / "run"
    run.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(run / ".s.PGSQL.5432"))
        monkeypatch.setenv("PATH", "/nonexistent")  # docker is not asked when the socket is there
        h = install.detect(tmp_path, root_user(), prefix)
    assert (h.root, h.uid, h.gid, h.prefix) == (tmp_path, 0, 0, prefix)
    assert h.db_host == str(run) and h.network is None
    assert h.db_note == f"the socket directory {run}"


@pytest.mark.skipif(os.geteuid() != 0, reason="install runs as root")
@pytest.mark.parametrize("running", [True, False])
def test_install_without_a_socket_directory_allows_the_containers_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: bool, shown_venv: Path
) -> None:
    prefix = shown_venv
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = [
        {
            "State": {"Running": running},
            "NetworkSettings": {
                "Networks": {"matrix": {"IPAddress": "172.18.0.2", "IPPrefixLen": 16}}
            },
        }
    ]
    # docker, at the process boundary: what `docker inspect matrix-postgres` prints.
    (bin_dir / "docker").write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(answer)!r})\n"
    )
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    h = install.detect(tmp_path, root_user(), prefix)
    assert h.db_host == "auto"
    if running:
        assert h.network == "172.18.0.0/16"
        assert "(now at 172.18.0.2)" in h.db_note and "its network 172.18.0.0/16" in h.db_note
        assert h.db_note.startswith(
            "no socket directory here (MDAD before March 2026); the matrix-postgres"
        )
    else:
        assert h.network is None
        assert h.db_note.startswith("none found now (no socket directory, no running container)")


@pytest.fixture
def sigint() -> Iterator[None]:
    """Python's own SIGINT handler, whatever this process inherited (a shell's background job
    starts with SIGINT ignored), and the inherited one put back after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_waits_until_the_changes_are_made(sigint: None) -> None:
    """install's and uninstall's changes run in _whole: a Ctrl-C that comes meanwhile is held
    until the last change is made, then raised (and run says it in a sentence, tests/systemd);
    a command started meanwhile (systemctl) is not interrupted by it either."""
    import subprocess
    import threading

    done: list[object] = []
    # A thread that does not block SIGINT: the kernel gives a process's signal to such a thread.
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    with pytest.raises(KeyboardInterrupt):
        with install._whole():
            os.kill(os.getpid(), signal.SIGINT)
            child = subprocess.run(
                ["sh", "-c", "kill -INT $$; echo held"], capture_output=True, text=True
            )
            for step in range(3):  # the handler would have run by now, were SIGINT let through
                signal.pthread_sigmask(signal.SIG_BLOCK, set())
                done.append(step)
        done.append("after")
    assert done == [0, 1, 2] and (child.returncode, child.stdout) == (0, "held\n")
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    idle.set()
    other.join()


def test_a_ctrl_c_that_was_ignored_stays_ignored(sigint: None) -> None:
    """Run as a background job (SIGINT ignored), a SIGINT during the changes is not turned
    into an interruption afterwards."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with install._whole():
            os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        pytest.fail("an ignored SIGINT became an interruption")
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
