"""The helper's wire protocol, shared by the helper (server) and the maubot plugin (client).

One JSON object per line over a Unix stream socket; one request and one response per connection.

    request:  {"v": 1, "token": "<shared token>", "op": "<one of OPS>", ...the op's fields,
               ...its optional flags, e.g. "deep": true}
    response: {"v": 1, "ok": true,  "result": {...}}
              {"v": 1, "ok": false, "error": {"code": "<code>", "message": "<one sentence>"}}

Standard library only: this module ships inside the maubot plugin, where nothing is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
MAX_REQUEST_BYTES = 4096
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
BRIDGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
# A backup id as bridgedoctor.reset.plan.new_id makes it: UTC stamp, what it backs up (a reset's
# mode, or an apply's config.yaml), counter.
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-(?:crypto|full|apply)(?:\.[0-9]{1,3})?$")
DIGEST_RE = re.compile(r"^[0-9a-f]{16}$")
# A Matrix user ID (the admin who confirmed), stored in manifests and audit lines.
USER_ID_RE = re.compile(r"^@[!-9;-~]{1,200}:[A-Za-z0-9.:\[\]-]{1,200}$")
FIELD_RE = {
    "bridge": BRIDGE_RE,
    "mode": re.compile(r"^(?:crypto|full)$"),
    "plan": BACKUP_ID_RE,
    "backup": BACKUP_ID_RE,
    "digest": DIGEST_RE,
    "requested_by": USER_ID_RE,
}
# The allowlist: every operation and exactly the fields it takes (all required).
# reset/restore carry the digest of the plan the admin confirmed: the helper re-plans and
# refuses if anything changed since.
OP_FIELDS: dict[str, tuple[str, ...]] = {
    "list": (),
    "check": ("bridge",),
    "check_all": (),
    "logs": ("bridge",),
    "reset_plan": ("bridge", "mode"),
    "reset": ("bridge", "mode", "plan", "digest", "requested_by"),
    "backups": ("bridge",),
    "restore_plan": ("bridge", "backup"),
    "restore": ("bridge", "backup", "digest", "requested_by"),
    # Write the proven key into config.yaml (undone by `restore` of the apply's id).
    "apply_plan": ("bridge",),
    "apply": ("bridge", "plan", "digest", "requested_by"),
    # Follow the unit for a bounded time after a change; read-only.
    "verify": ("bridge",),
}
# Optional yes/no flags (JSON true/false; absent means false), per operation. `progress`: the
# client reads progress lines, {"v": 1, "progress": {...}}, before the one response line.
OP_FLAGS: dict[str, tuple[str, ...]] = {
    "check": ("deep",),
    "reset": ("progress",),
    "restore": ("progress",),
}
FLAGS = ("deep", "progress")
OPS = frozenset(OP_FIELDS)
MUTATING = frozenset({"reset", "restore", "apply"})

# Error codes a client can act on.
E_BAD_REQUEST = "bad_request"
E_UNAUTHORIZED = "unauthorized"
E_UNKNOWN_OP = "unknown_op"
E_UNKNOWN_BRIDGE = "unknown_bridge"
E_BUSY = "busy"
E_TIMEOUT = "timeout"
E_INTERNAL = "internal"
# A reset or restore refused or failed; the message says whether anything was changed.
E_RESET = "reset_refused"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Request:
    token: str = field(repr=False)  # never in a log line or a traceback
    op: str
    bridge: str | None = None
    mode: str | None = None
    plan: str | None = None
    backup: str | None = None
    digest: str | None = None
    requested_by: str | None = None
    deep: bool = False  # check: verify every pickled row, not a sample
    progress: bool = False  # reset, restore: send progress lines before the response

    def fields(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in FIELD_RE if getattr(self, k) is not None}


def encode_request(req: Request) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "token": req.token, "op": req.op, **req.fields()}
    body.update({f: True for f in FLAGS if getattr(req, f)})
    return json.dumps(body).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line; raises ProtocolError with a plain sentence."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(E_BAD_REQUEST, "The request is too large.")
    if not line.endswith(b"\n"):
        raise ProtocolError(E_BAD_REQUEST, "The request was truncated (no end of line).")
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: deeply nested input such as 4000 '[' is hostile, not a crash.
        raise ProtocolError(E_BAD_REQUEST, "The request is not valid JSON.") from None
    # type() check: True and 1.0 compare equal to 1 but are not version 1.
    if not isinstance(body, dict) or type(body.get("v")) is not int or body["v"] != VERSION:
        raise ProtocolError(E_BAD_REQUEST, f"The request is not a version {VERSION} object.")
    token, op = body.get("token"), body.get("op")
    if not isinstance(token, str):
        raise ProtocolError(E_UNAUTHORIZED, "The request carries no token.")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(E_UNKNOWN_OP, "The helper does not offer that operation.")
    wanted = OP_FIELDS[op]
    fields: dict[str, str] = {}
    for name, pattern in FIELD_RE.items():
        value = body.get(name)
        if name not in wanted:
            if value is not None:
                raise ProtocolError(E_BAD_REQUEST, f"Operation {op} takes no {name}.")
            continue
        if not isinstance(value, str) or not pattern.fullmatch(value):
            if name == "bridge":
                raise ProtocolError(E_UNKNOWN_BRIDGE, "The request names no valid bridge.")
            raise ProtocolError(E_BAD_REQUEST, f"The request has no valid {name}.")
        fields[name] = value
    flags: dict[str, bool] = {}
    for name in FLAGS:
        value = body.get(name)
        if value is None:
            continue
        if name not in OP_FLAGS.get(op, ()):
            raise ProtocolError(E_BAD_REQUEST, f"Operation {op} takes no {name}.")
        if type(value) is not bool:  # 1 and "yes" are not booleans
            raise ProtocolError(E_BAD_REQUEST, f"The request's {name} must be true or false.")
        flags[name] = value
    return Request(token=token, op=op, **fields, **flags)


def encode_response(
    result: dict[str, Any] | None = None, error: ProtocolError | None = None
) -> bytes:
    if error is not None:
        body = {"v": VERSION, "ok": False, "error": {"code": error.code, "message": error.message}}
    else:
        body = {"v": VERSION, "ok": True, "result": result or {}}
    return json.dumps(body).encode() + b"\n"


def encode_progress(state: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, "progress": state}).encode() + b"\n"


def decode_response(line: bytes) -> dict[str, Any]:
    """The result of a response line, or ProtocolError carrying the helper's error."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError(E_BAD_REQUEST, "The helper's answer is not valid JSON.") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise ProtocolError(E_BAD_REQUEST, "The helper speaks another protocol version.")
    if body.get("ok") is True and isinstance(body.get("result"), dict):
        return body["result"]
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    raise ProtocolError(str(err.get("code", E_INTERNAL)), str(err.get("message", "Helper error.")))


async def call(
    socket_path: str,
    req: Request,
    timeout: float = 60.0,
    on_progress: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Send one request to the helper. Connection problems raise OSError or TimeoutError.
    Progress lines (asked for with `req.progress`) go to `on_progress` as they arrive."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=MAX_RESPONSE_BYTES)
        try:
            writer.write(encode_request(req))
            await writer.drain()
            while True:
                line = await reader.readline()
                state = _progress(line) if req.progress else None
                if state is None:
                    return line
                if on_progress is not None:
                    on_progress(state)
        finally:
            writer.close()

    line = await asyncio.wait_for(exchange(), timeout)
    if not line:
        raise ConnectionResetError("the helper closed the connection without answering")
    return decode_response(line)


def _progress(line: bytes) -> dict[str, Any] | None:
    """The state of a progress line, or None for anything else (the response)."""
    if not line.startswith(b'{"v": 1, "progress": '):
        return None
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    state = body.get("progress") if isinstance(body, dict) else None
    return state if isinstance(state, dict) else None
