"""Who may use the helper, and which bridge names a request may carry: the token must match
exactly, an allowlist of uids never opens up when it is empty, and a bridge name is a name, not a
path. Over the real socket where the guard lives in the server."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.helper.config import ConfigError
from bridgedoctor.protocol import E_UNKNOWN_BRIDGE, ProtocolError, decode_request
from tests.test_helper_server import (  # noqa: F401 - fleet and sockdir are fixtures
    TOKEN,
    Running,
    error_code,
    fleet,
    make_config,
    sockdir,
)

# Everything that is not the token: nothing, its first character, any shorter or longer
# version, another case, surrounding space.
NOT_THE_TOKEN = [
    "",
    TOKEN[:1],
    TOKEN[: len(TOKEN) // 2],
    TOKEN[:-1],
    TOKEN + "x",
    TOKEN.upper(),
    " " + TOKEN,
    TOKEN[1:],
]


@pytest.fixture
def running(fleet: Any, sockdir: Path) -> Any:  # noqa: F811
    started: list[Running] = []

    def _start(**overrides: Any) -> Running:
        r = Running(make_config(fleet, sockdir, **overrides))
        started.append(r)
        return r

    yield _start
    for r in started:
        r.stop()


def test_only_the_exact_token_is_accepted(running: Any) -> None:
    helper = running()
    for token in NOT_THE_TOKEN:
        assert error_code(helper.req("list", token=token)) == "unauthorized", repr(token)
    assert helper.req("list")["ok"] is True


def test_empty_allowed_uids_is_refused_at_start(sockdir: Path, fleet: Any) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as e:
        make_config(fleet, sockdir, allowed_uids=[])
    assert str(e.value) == (
        "allowed_uids is an empty list, so no one could use the helper; list the uids that "
        "may connect (id -u matrix) or remove the setting."
    )


def test_an_empty_uid_set_admits_nobody(sockdir: Path, fleet: Any) -> None:  # noqa: F811
    """Defence in depth: a config object built without the loader (or a future loader bug)
    with an empty set must lock everyone out, never let everyone in."""
    cfg = dataclasses.replace(make_config(fleet, sockdir), allowed_uids=frozenset())
    r = Running(cfg)
    try:
        assert error_code(r.req("list")) == "unauthorized"
    finally:
        r.stop()


@pytest.mark.parametrize(
    "bridge",
    ["./x", "a/b", "a.b", "x.", "../etc", "gmessages/..", "gmessages/", ".", "a\\b", "a b"],
)
def test_a_bridge_name_is_never_a_path(bridge: str) -> None:
    line = f'{{"v": 1, "token": "{TOKEN}", "op": "check", "bridge": "{bridge}"}}\n'
    with pytest.raises(ProtocolError) as e:
        decode_request(line.replace("\\", "\\\\").encode())
    assert e.value.code == E_UNKNOWN_BRIDGE


def test_peer_credentials_are_the_kernels() -> None:
    """SO_PEERCRED over a real socket pair: this process on both ends; no socket, no peer."""
    from bridgedoctor.helper.peer import Peer, credentials

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert credentials(a) == Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
    assert credentials(None) is None


def test_an_audit_line_names_what_is_known_and_dashes_the_rest() -> None:
    from bridgedoctor.helper.audit import Entry

    assert Entry().line(0.4) == "request op=- bridge=- uid=- pid=- result=- ms=0"
    full = Entry(op="reset", bridge="whatsapp", uid=0, pid=4242, result="done", by="@a:x")
    assert full.line(1234.5) == (
        "request op=reset bridge=whatsapp uid=0 pid=4242 result=done ms=1234 by=@a:x"
    )


def test_the_helper_logs_level_and_message_to_stderr_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridgedoctor.helper.audit import LOGGER_NAME, audit_log, setup_logging

    ours = logging.getLogger(LOGGER_NAME)
    saved = (ours.handlers[:], ours.level, ours.propagate)
    try:
        setup_logging(logging.DEBUG)
        setup_logging(logging.DEBUG)  # again: the handler is replaced, not added
        audit_log.debug("request op=list")
        assert capsys.readouterr().err == "DEBUG request op=list\n"  # the journal dates it
        assert ours.propagate is False and ours.level == logging.DEBUG
        setup_logging()
        audit_log.debug("not at the default level")
        audit_log.info("request op=check")
        assert capsys.readouterr().err == "INFO request op=check\n"
    finally:
        ours.handlers[:], ours.level, ours.propagate = saved
