"""Hostile input, generated: at the protocol parser, and at a running helper over its socket.

What "opened no file outside the host root" means here, and why it is sound: a process-wide
audit hook (sys.addaudithook, PEP 578) records every `open` event (builtin open, io.open, os.open,
pathlib) and every `sqlite3.connect`, from every thread, including asyncio.to_thread workers.
The server runs in this process, so all its file access passes the hook. Recording is switched
on only around each exchange, and each path is normalised with os.path.abspath, so `..` cannot
hide an escape. Allowed: the sample host's root and systemd dir, and Python's own install (lazy
imports, the bundled bridges.yaml). Opens done in C outside Python's I/O layer (OpenSSL reading
certificates) are not seen, and none of them take a path from a request.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import string
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import bridgedoctor
from bridgedoctor.protocol import (
    BRIDGE_RE,
    FIELD_RE,
    MAX_REQUEST_BYTES,
    OP_FIELDS,
    OPS,
    ProtocolError,
    Request,
    decode_request,
)
from tests.support.fleet import Host
from tests.test_helper_server import (  # noqa: F401 - fleet and sockdir are fixtures
    ERROR_CODES,
    TOKEN,
    Running,
    answer,
    fleet,
    make_config,
    read_all,
    sockdir,
)

# --- the audit hook ------------------------------------------------------------------------------

_recording: list[str] | None = None
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audit event in the process from now on: return fast, and never raise
    # (an exception here would surface in whatever code triggered the event).
    if _recording is None or event not in ("open", "sqlite3.connect"):
        return
    try:
        target = args[0]
        if isinstance(target, int):
            return  # os.fdopen of a descriptor opened (and recorded) before
        path = os.fsdecode(os.fspath(target))
        if event == "sqlite3.connect" and path.startswith("file:"):
            path = path[5:].split("?", 1)[0]
        # A relative name is opened against a directory descriptor (probes/bridgefile.py walks
        # one component at a time from a recorded absolute directory): keep it as it is.
        with _lock:
            if _recording is not None:
                _recording.append(path if _component(path) else os.path.abspath(path))
    except Exception:  # noqa: BLE001
        with _lock:
            if _recording is not None:
                _recording.append(f"<unreadable {event} argument>")


class OpenRecorder:
    def __enter__(self) -> list[str]:
        global _recording, _installed
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
        with _lock:
            _recording = []
            return _recording

    def __exit__(self, *_: Any) -> None:
        global _recording
        with _lock:
            _recording = None


def allowed_prefixes(host: Host, *own: Path) -> tuple[str, ...]:
    """`own`: directories from the helper's own config (its backup_dir)."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    # Installed packages may also sit outside the prefix (a .pth pointing at another venv's
    # site-packages, as scripts/mutation's scratch interpreter does).
    python |= {p for p in sys.path if os.path.basename(p.rstrip("/")) == "site-packages"}
    package = os.path.dirname(bridgedoctor.__file__)  # bridges.yaml (editable installs too)
    # /dev/null: stdin and stderr of the SQLite reader's child process (probes/sqlite_read.py).
    dirs = (str(host.root), str(host.systemd), package, *python, "/dev/null", *map(str, own))
    return tuple(p.rstrip("/") + "/" for p in dirs)


def _component(path: str) -> bool:
    return bool(path) and "/" not in path and path not in (".", "..")


def outside(paths: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Absolute paths outside the prefixes. A single relative component was opened against a
    directory descriptor, so it is inside whatever absolute directory was walked to first."""
    return [p for p in paths if not (_component(p) or (p + "/").startswith(prefixes))]


# --- strategies ----------------------------------------------------------------------------------

json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
tokens = (
    st.sampled_from([TOKEN, TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "", " " + TOKEN])
    | st.text(max_size=80)
    | json_value
)
ops = st.sampled_from(sorted(OPS) + ["shell", "LIST", "check ", ""]) | st.text(max_size=20)
bridges = (
    st.sampled_from(
        [
            "gmessages",
            "whatsapp",
            "signal",
            "slack",
            "../../etc",
            "gmessages/../../../etc/passwd",
            "/etc/shadow",
            "gmessages\n",
            "a" * 41,
            "mautrix-gmessages",
        ]
    )
    | st.from_regex(BRIDGE_RE, fullmatch=True)
    | st.text(max_size=60)
    | json_value
)
backup_ids = st.sampled_from(
    ["20261126T064500Z-crypto", "20261126T064500Z-full.2", "../../etc", "20261126T064500Z"]
) | st.text(max_size=30)
digests = st.sampled_from(["0123456789abcdef", "0123456789ABCDEF", "0" * 17]) | st.text(
    max_size=20
)
users = st.sampled_from(["@admin:example.com", "@admin:example.com\n", "admin", "@:x"]) | st.text(
    max_size=30
)
versions = st.sampled_from([1, 1.0, True, 2, 0, "1", None, -1])
bodies = st.fixed_dictionaries(
    {},
    optional={
        "v": versions,
        "token": tokens,
        "op": ops,
        "bridge": bridges,
        "mode": st.sampled_from(["crypto", "full", "FULL", "all"]) | json_value,
        "plan": backup_ids,
        "backup": backup_ids,
        "digest": digests,
        "requested_by": users,
        "extra": json_value,
        "pad": st.sampled_from([0, 100, MAX_REQUEST_BYTES - 60, MAX_REQUEST_BYTES, 9000]).map(
            "p".__mul__
        ),
    },
)


# Names that look like a bridge but walk the filesystem: '.', '/' after a leading letter.
path_like = st.from_regex(r"[a-z][a-z0-9./-]{0,40}", fullmatch=True).filter(
    lambda b: "." in b or "/" in b
)
# Well-formed requests with a token that is not the token: empty, any prefix, one more char.
near_tokens = st.integers(0, len(TOKEN) - 1).map(lambda n: TOKEN[:n]) | st.sampled_from(
    ["", TOKEN + "x", TOKEN[1:], TOKEN.upper()]
)


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    body = draw(bodies)
    # Mostly well-formed requests with the right token, so real checks run against the host.
    roll = draw(st.integers(0, 7))
    if roll == 0:
        body.update(v=1, token=TOKEN, op="check", bridge=draw(bridges))
    elif roll == 1:  # a well-formed request of any op: its fields, drawn from their strategies
        op = draw(st.sampled_from(sorted(OPS)))
        fields = {k: v for k, v in body.items() if k in FIELD_RE and k in OP_FIELDS[op]}
        body = {"v": 1, "token": TOKEN, "op": op, "bridge": draw(bridges), **fields}
        body = {k: v for k, v in body.items() if k in ("v", "token", "op") or k in OP_FIELDS[op]}
    elif roll == 2:  # perfectly well-formed, except that the token is almost the token
        body = {"v": 1, "token": draw(near_tokens), "op": draw(st.sampled_from(["list", "check"]))}
        if body["op"] == "check":
            body["bridge"] = draw(st.sampled_from(DEPLOYED))
    elif roll == 3:  # well-formed, except that the bridge name is a path
        body = {"v": 1, "token": TOKEN, "op": "check", "bridge": draw(path_like)}
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    end = draw(st.sampled_from(["\n", "\n", "", "\r\n", "\n\n", "\nextra"]))
    return text.encode("utf-8", "surrogatepass") + end.encode()


hostile = st.sampled_from(
    [
        b"[" * 5000 + b"\n",
        b"[" * 4000 + b"\n",
        b'{"a":' * 1500 + b"\n",
        b"1e999999\n",
        b'{"v": 1e400, "token": "x", "op": "list"}\n',
        b'\xef\xbb\xbf{"v": 1, "token": "x", "op": "list"}\n',
        b'{"v": 1, "token": "\\ud800", "op": "list"}\n',
        b'{"v": 1, "token": "' + TOKEN.encode() + b'", "op": "check", "bridge": "..\\/etc"}\n',
        b'{"v": 1, "v": 2, "token": "x", "op": "list"}\n',
        b"\n",
        b"",
        b"\x00" * 5000,
        b"A" * (MAX_REQUEST_BYTES + 1) + b"\n",
        b"A" * 20000,
    ]
)
payloads = json_lines() | st.binary(max_size=2000) | hostile  # long lines: in `hostile`


# --- the parser ----------------------------------------------------------------------------------

LOWER, DIGITS = set(string.ascii_lowercase), set(string.digits)


def valid_bridge(v: str) -> bool:
    """A role name: a lowercase letter, then up to 40 of lowercase letters, digits and '-'."""
    return 1 <= len(v) <= 41 and v[0] in LOWER and all(c in LOWER | DIGITS | {"-"} for c in v)


def valid_backup_id(v: str) -> bool:
    """20261126T064500Z-crypto, -full, optionally .N (N of 1 to 3 digits)."""
    stamp, dash, rest = v.partition("-")
    mode, dot, n = rest.partition(".")
    return (
        len(stamp) == 16
        and stamp[:8].isascii() and stamp[:8].isdigit() and stamp[8] == "T"
        and stamp[9:15].isascii() and stamp[9:15].isdigit() and stamp[15] == "Z"
        and dash == "-" and mode in ("crypto", "full")
        and (not dot or (1 <= len(n) <= 3 and n.isascii() and n.isdigit()))
    )  # fmt: skip


def valid_user_id(v: str) -> bool:
    """@local:server, local printable ASCII without ':' or space, each part 1 to 200 chars."""
    local, colon, server = v[1:].partition(":")
    server_chars = set(string.ascii_letters + string.digits + ".:[]-")
    return (
        v[:1] == "@" and colon == ":"
        and 1 <= len(local) <= 200 and all("!" <= c <= "~" and c != ":" for c in local)
        and 1 <= len(server) <= 200 and all(c in server_chars for c in server)
    )  # fmt: skip


VALID = {
    "bridge": valid_bridge,
    "mode": lambda v: v in ("crypto", "full"),
    "plan": valid_backup_id,
    "backup": valid_backup_id,
    "digest": lambda v: len(v) == 16 and all(c in "0123456789abcdef" for c in v),
    "requested_by": valid_user_id,
}


@settings(max_examples=600, deadline=None, database=None)
@given(payloads)
def test_parse_accepts_or_refuses_plainly(line: bytes) -> None:
    try:
        req = decode_request(line)
    except ProtocolError as e:
        assert e.code in ERROR_CODES and e.message.endswith(".")
        return
    assert isinstance(req, Request) and isinstance(req.token, str) and req.op in OPS
    assert len(line) <= MAX_REQUEST_BYTES and line.endswith(b"\n")
    # Exactly the op's fields, each valid by the spec written out by hand below (not by the
    # parser's own regexes, which are what is being tested).
    assert set(req.fields()) == set(OP_FIELDS[req.op])
    for name, value in req.fields().items():
        assert VALID[name](value), (name, value)


def test_decode_request_deep_nesting() -> None:
    with pytest.raises(ProtocolError):
        decode_request(b"[" * 4000 + b"\n")
    for version in (b"true", b"1.0"):  # equal to 1 in Python, but not version 1
        with pytest.raises(ProtocolError):
            decode_request(b'{"v": ' + version + b', "token": "t", "op": "list"}\n')


# --- the running helper --------------------------------------------------------------------------


@pytest.fixture
def running(fleet: Host, sockdir: Path) -> Iterator[Running]:  # noqa: F811
    r = Running(make_config(fleet, sockdir, read_timeout=2))
    yield r
    r.stop()


def send(path: str, payload: bytes) -> bytes:
    """Like the plugin, but tolerant: the helper may answer and close before we finish writing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: an oversized or multi-line request
        return read_all(s, reset_ends=True)


DEPLOYED = ["gmessages", "whatsapp", "signal"]  # what the `fleet` host has


def assert_well_formed_with_the_token(payload: bytes) -> None:
    """What an `ok` answer requires, checked independently of the parser: one JSON object on
    the first line carrying exactly the token, version 1 (an int), an offered op with exactly
    its fields, each valid, and a deployed bridge."""
    first = payload.split(b"\n", 1)[0]
    body = json.loads(first)
    assert isinstance(body, dict)
    assert body.get("token") == TOKEN, "answered a request without the exact token"
    assert type(body.get("v")) is int and body["v"] == 1
    op = body.get("op")
    assert op in OP_FIELDS
    fields = {k for k in FIELD_RE if body.get(k) is not None}
    assert fields == set(OP_FIELDS[op])
    assert all(VALID[k](body[k]) for k in fields)
    if "bridge" in fields:
        assert body["bridge"] in DEPLOYED


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=payloads)
def test_helper_survives_anything(running: Running, fleet: Host, payload: bytes) -> None:  # noqa: F811
    prefixes = allowed_prefixes(fleet, running.cfg.backup_dir)
    with OpenRecorder() as opened:
        raw = send(running.path, payload)
    body = answer(raw)  # exactly one valid protocol line, no secret in it
    event("ok" if body["ok"] else body["error"]["code"])  # --hypothesis-show-statistics
    if body["ok"]:
        assert_well_formed_with_the_token(payload)
    assert not outside(opened, prefixes), outside(opened, prefixes)
    # It never crashed: the next well-formed request is answered normally.
    assert running.req("list")["ok"] is True


def test_audit_hook_sees_the_checks(running: Running, fleet: Host) -> None:  # noqa: F811
    """The recorder is not vacuous: a real check opens the bridge config under the root."""
    with OpenRecorder() as opened:
        assert running.req("check", "gmessages")["ok"] is True
    # The config is reached one component at a time from the bridge directory's descriptor.
    base = str(fleet.root / "mautrix-gmessages")
    walk = opened[opened.index(base) :]
    assert walk[1:3] == ["config", "config.yaml"], opened
    assert not outside(opened, allowed_prefixes(fleet))
    # ...and it would notice an escape.
    outsider = Path(tempfile.mkdtemp(prefix="bdh-canary-")) / "canary"
    outsider.write_text("x")
    with OpenRecorder() as opened:
        outsider.read_text()
    assert outside(opened, allowed_prefixes(fleet)) == [str(outsider)]
    shutil.rmtree(outsider.parent)
