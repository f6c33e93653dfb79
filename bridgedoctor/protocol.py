"""The helper's wire protocol, shared by the helper (server) and the maubot plugin (client).

One JSON object per line over a Unix stream socket; one request and one response per connection.

    request:  {"v": 1, "token": "<shared token>", "op": "list" | "check" | "check_all",
               "bridge": "<name>"  (check only)}
    response: {"v": 1, "ok": true,  "result": {...}}
              {"v": 1, "ok": false, "error": {"code": "<code>", "message": "<one sentence>"}}

Standard library only: this module ships inside the maubot plugin, where nothing is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
MAX_REQUEST_BYTES = 4096
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
OPS = frozenset({"list", "check", "check_all"})
BRIDGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")

# Error codes a client can act on.
E_BAD_REQUEST = "bad_request"
E_UNAUTHORIZED = "unauthorized"
E_UNKNOWN_OP = "unknown_op"
E_UNKNOWN_BRIDGE = "unknown_bridge"
E_BUSY = "busy"
E_TIMEOUT = "timeout"
E_INTERNAL = "internal"


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


def encode_request(req: Request) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "token": req.token, "op": req.op}
    if req.bridge is not None:
        body["bridge"] = req.bridge
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
    token, op, bridge = body.get("token"), body.get("op"), body.get("bridge")
    if not isinstance(token, str):
        raise ProtocolError(E_UNAUTHORIZED, "The request carries no token.")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(E_UNKNOWN_OP, "The helper does not offer that operation.")
    if op == "check":
        if not isinstance(bridge, str) or not BRIDGE_RE.fullmatch(bridge):
            raise ProtocolError(E_UNKNOWN_BRIDGE, "The request names no valid bridge.")
    elif bridge is not None:
        raise ProtocolError(E_BAD_REQUEST, f"Operation {op} takes no bridge.")
    return Request(token=token, op=op, bridge=bridge)


def encode_response(
    result: dict[str, Any] | None = None, error: ProtocolError | None = None
) -> bytes:
    if error is not None:
        body = {"v": VERSION, "ok": False, "error": {"code": error.code, "message": error.message}}
    else:
        body = {"v": VERSION, "ok": True, "result": result or {}}
    return json.dumps(body).encode() + b"\n"


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


async def call(socket_path: str, req: Request, timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the helper. Connection problems raise OSError or TimeoutError."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=MAX_RESPONSE_BYTES)
        try:
            writer.write(encode_request(req))
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()

    line = await asyncio.wait_for(exchange(), timeout)
    if not line:
        raise ConnectionResetError("the helper closed the connection without answering")
    return decode_response(line)
