"""bridgedoctor.protocol from the plugin's side: the helper's answer read byte for byte, and
`call` over a real Unix socket to a server written out here in raw bytes (not with the module's
own encoders, so a change to both ends at once is still seen)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.protocol import (
    ProtocolError,
    Request,
    call,
    decode_request,
    decode_response,
    encode_progress,
    encode_request,
    encode_response,
)

TOKEN = "t0k3n"
ID = "20261126T064500Z-crypto"
DIGEST = "0123456789abcdef"
ADMIN = "@admin:example.com"


def line(**body: object) -> bytes:
    return json.dumps({"v": 1, "token": TOKEN, **body}).encode() + b"\n"


# --- the request, as the helper reads it --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"op": "list"}, {}),
        ({"op": "check_all"}, {}),
        ({"op": "check", "bridge": "gmessages"}, {"bridge": "gmessages"}),
        ({"op": "check", "bridge": "a"}, {"bridge": "a"}),
        ({"op": "check", "bridge": "gmessages", "deep": True}, {"bridge": "gmessages", "deep": True}),
        ({"op": "check", "bridge": "gmessages", "deep": False}, {"bridge": "gmessages"}),
        ({"op": "check", "bridge": "gmessages", "deep": None}, {"bridge": "gmessages"}),
        ({"op": "logs", "bridge": "signal"}, {"bridge": "signal"}),
        ({"op": "verify", "bridge": "signal"}, {"bridge": "signal"}),
        ({"op": "backups", "bridge": "signal"}, {"bridge": "signal"}),
        ({"op": "apply_plan", "bridge": "signal"}, {"bridge": "signal"}),
        ({"op": "reset_plan", "bridge": "signal", "mode": "full"}, {"bridge": "signal", "mode": "full"}),
        (
            {"op": "reset", "bridge": "signal", "mode": "crypto", "plan": ID, "digest": DIGEST,
             "requested_by": ADMIN, "progress": True},
            {"bridge": "signal", "mode": "crypto", "plan": ID, "digest": DIGEST,
             "requested_by": ADMIN, "progress": True},
        ),
        (
            {"op": "restore_plan", "bridge": "signal", "backup": "20261126T064500Z-full.2"},
            {"bridge": "signal", "backup": "20261126T064500Z-full.2"},
        ),
        (
            {"op": "restore", "bridge": "signal", "backup": ID, "digest": DIGEST,
             "requested_by": ADMIN},
            {"bridge": "signal", "backup": ID, "digest": DIGEST, "requested_by": ADMIN},
        ),
        (
            {"op": "apply", "bridge": "signal", "plan": "20261126T064500Z-apply", "digest": DIGEST,
             "requested_by": ADMIN, "unknown": [1]},
            {"bridge": "signal", "plan": "20261126T064500Z-apply", "digest": DIGEST,
             "requested_by": ADMIN},
        ),
    ],
)  # fmt: skip
def test_a_well_formed_request_is_read_field_by_field(body: dict, want: dict) -> None:
    assert decode_request(line(**body)) == Request(token=TOKEN, op=body["op"], **want)


def test_a_request_at_the_size_limit_is_read() -> None:
    head = line(op="list")[:-2]
    exact = head + b', "pad": "' + b"p" * (4096 - len(head) - 13) + b'"}\n'
    assert len(exact) == 4096
    assert decode_request(exact) == Request(token=TOKEN, op="list")
    assert decode_request(line(op="list").replace(b"\n", b"\r\n")).op == "list"


NOT_V1 = ("bad_request", "The request is not a version 1 object.")
NO_TOKEN = ("unauthorized", "The request carries no token.")
NO_OP = ("unknown_op", "The helper does not offer that operation.")
NO_BRIDGE = ("unknown_bridge", "The request names no valid bridge.")


def bad(sentence: str) -> tuple[str, str]:
    return ("bad_request", sentence)


def no_valid(name: str) -> tuple[str, str]:
    return bad(f"The request has no valid {name}.")


def not_a_bool(name: str) -> tuple[str, str]:
    return bad(f"The request's {name} must be true or false.")


RESET = {"op": "reset", "bridge": "signal", "mode": "full", "plan": ID, "digest": DIGEST}
APPLY = {"op": "apply", "bridge": "signal", "plan": ID, "digest": DIGEST}


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (b"p" * 4097, bad("The request is too large.")),
        (line(op="list")[:-1], bad("The request was truncated (no end of line).")),
        (b"{\n", bad("The request is not valid JSON.")),
        (b"\xff\n", bad("The request is not valid JSON.")),
        (b"[" * 4000 + b"\n", bad("The request is not valid JSON.")),
        (b"[1]\n", NOT_V1),
        (b'{"token": "t", "op": "list"}\n', NOT_V1),
        (b'{"v": 2, "token": "t", "op": "list"}\n', NOT_V1),
        (b'{"v": true, "token": "t", "op": "list"}\n', NOT_V1),
        (b'{"v": 1.0, "token": "t", "op": "list"}\n', NOT_V1),
        (b'{"v": "1", "token": "t", "op": "list"}\n', NOT_V1),
        (b'{"v": 1, "op": "list"}\n', NO_TOKEN),
        (b'{"v": 1, "token": 5, "op": "list"}\n', NO_TOKEN),
        (b'{"v": 1, "token": "t"}\n', NO_OP),
        (b'{"v": 1, "token": "t", "op": ["list"]}\n', NO_OP),
        (b'{"v": 1, "token": "t", "op": "shell"}\n', NO_OP),
        (line(op="list", bridge="signal"), bad("Operation list takes no bridge.")),
        (line(op="check", bridge="signal", mode="full"), bad("Operation check takes no mode.")),
        (line(op="list", requested_by=ADMIN), bad("Operation list takes no requested_by.")),
        (line(op="check"), NO_BRIDGE),
        (line(op="check", bridge=5), NO_BRIDGE),
        (line(op="check", bridge="Signal"), NO_BRIDGE),
        (line(op="check", bridge="signal\n"), NO_BRIDGE),
        (line(op="check", bridge="a" * 42), NO_BRIDGE),
        (line(op="reset_plan", bridge="signal"), no_valid("mode")),
        (line(op="reset_plan", bridge="signal", mode="all"), no_valid("mode")),
        (line(op="restore_plan", bridge="signal", backup="x" + ID), no_valid("backup")),
        (line(op="restore_plan", bridge="signal", backup=ID + "x"), no_valid("backup")),
        (line(**APPLY, requested_by="admin"), no_valid("requested_by")),
        (line(**{**APPLY, "digest": DIGEST.upper()}, requested_by=ADMIN), no_valid("digest")),
        (line(op="list", deep=True), bad("Operation list takes no deep.")),
        (
            line(op="check", bridge="signal", progress=True),
            bad("Operation check takes no progress."),
        ),
        (line(op="check", bridge="signal", deep=1), not_a_bool("deep")),
        (line(op="check", bridge="signal", deep="yes"), not_a_bool("deep")),
        (line(**RESET, requested_by=ADMIN, progress=0), not_a_bool("progress")),
    ],
)
def test_each_refusal_has_its_code_and_sentence(raw: bytes, refused: tuple[str, str]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(raw)
    code, message = refused
    assert (caught.value.code, caught.value.message, str(caught.value)) == (code, message, message)


# --- what each end writes, byte for byte ----------------------------------------------------------


def test_a_request_is_written_with_its_fields_and_only_its_true_flags() -> None:
    assert encode_request(Request(TOKEN, "list")) == (
        b'{"v": 1, "token": "t0k3n", "op": "list"}\n'
    )
    assert encode_request(Request(TOKEN, "check", bridge="signal", deep=True)) == (
        b'{"v": 1, "token": "t0k3n", "op": "check", "bridge": "signal", "deep": true}\n'
    )
    full = Request(TOKEN, "reset", bridge="signal", mode="full", plan=ID, digest=DIGEST,
                   requested_by=ADMIN, progress=True)  # fmt: skip
    assert json.loads(encode_request(full)) == {
        "v": 1, "token": TOKEN, "op": "reset", "bridge": "signal", "mode": "full", "plan": ID,
        "digest": DIGEST, "requested_by": ADMIN, "progress": True,
    }  # fmt: skip
    assert decode_request(encode_request(full)) == full
    restore = Request(TOKEN, "restore", bridge="signal", backup=ID, digest=DIGEST,
                      requested_by=ADMIN)  # fmt: skip
    assert restore.fields() == {"bridge": "signal", "backup": ID, "digest": DIGEST,
                                "requested_by": ADMIN}  # fmt: skip
    assert "t0k3n" not in repr(full)


def test_a_response_and_a_progress_line_are_written_as_the_plugin_reads_them() -> None:
    assert encode_response({"bridges": ["a"]}) == (
        b'{"v": 1, "ok": true, "result": {"bridges": ["a"]}}\n'
    )
    assert encode_response() == b'{"v": 1, "ok": true, "result": {}}\n'
    assert encode_response(None) == encode_response({})
    busy = ProtocolError("busy", "Try again in a minute.")
    assert encode_response({"ignored": 1}, error=busy) == (
        b'{"v": 1, "ok": false, "error": {"code": "busy", "message": "Try again in a minute."}}\n'
    )
    assert encode_response(error=busy) == encode_response({"ignored": 1}, error=busy)
    assert encode_progress({"step": "backup"}) == b'{"v": 1, "progress": {"step": "backup"}}\n'


def refusal(line: bytes) -> tuple[str, str, str]:
    """code, message and str() of the ProtocolError a response line raises."""
    with pytest.raises(ProtocolError) as caught:
        decode_response(line)
    return caught.value.code, caught.value.message, str(caught.value)


def test_an_answer_that_is_not_json_is_a_bad_request() -> None:
    sentence = "The helper's answer is not valid JSON."
    for line in (b"not json\n", b"\xff\xfe\n", b"[" * 5000 + b"\n", b""):
        assert refusal(line) == ("bad_request", sentence, sentence)


@pytest.mark.parametrize(
    "line",
    [
        b"[1]\n",
        b'"ok"\n',
        b"1\n",
        b'{"v": 2, "ok": true, "result": {}}\n',
        b'{"v": "1", "ok": true, "result": {}}\n',
        b'{"ok": true, "result": {}}\n',
    ],
)
def test_an_answer_of_another_version_is_refused(line: bytes) -> None:
    sentence = "The helper speaks another protocol version."
    assert refusal(line) == ("bad_request", sentence, sentence)


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        # Only "ok": true with an object for a result is an answer.
        (b'{"v": 1, "ok": false, "result": {"bridges": []}}\n', "internal", "Helper error."),
        (b'{"v": 1, "result": {"bridges": []}}\n', "internal", "Helper error."),
        (b'{"v": 1, "ok": 1, "result": {"bridges": []}}\n', "internal", "Helper error."),
        (b'{"v": 1, "ok": true, "result": [1]}\n', "internal", "Helper error."),
        (b'{"v": 1, "ok": true}\n', "internal", "Helper error."),
        # An error that is not an object says nothing.
        (b'{"v": 1, "ok": false, "error": "busy"}\n', "internal", "Helper error."),
        (b'{"v": 1, "ok": false, "error": ["busy", "x"]}\n', "internal", "Helper error."),
        # An error object's fields, each as text, each missing on its own.
        (
            b'{"v": 1, "ok": false, "error": {"code": "busy", "message": "Try again."}}\n',
            "busy",
            "Try again.",
        ),
        (b'{"v": 1, "ok": false, "error": {"code": 5}}\n', "5", "Helper error."),
        (b'{"v": 1, "ok": false, "error": {"message": "No."}}\n', "internal", "No."),
    ],
)
def test_anything_but_a_result_is_the_helpers_error(line: bytes, code: str, message: str) -> None:
    assert refusal(line) == (code, message, message)


def test_a_result_is_the_answer() -> None:
    line = b'{"v": 1, "ok": true, "result": {"bridges": ["a"]}, "extra": 1}\n'
    assert decode_response(line) == {"bridges": ["a"]}
    assert decode_response(b'{"v": 1.0, "ok": true, "result": {}}') == {}


# --- call, over a real socket --------------------------------------------------------------------


class RawHelper:
    """Reads one request line, records it, and writes the given bytes back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.answer = b""
        self.requests: list[dict[str, Any]] = []
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(json.loads(await reader.readline()))
            writer.write(self.answer)
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def helper() -> AsyncIterator[RawHelper]:
    # Not tmp_path: a Unix socket path must fit in 107 bytes.
    where = Path(tempfile.mkdtemp(prefix="bdpr-", dir="/tmp"))
    h = RawHelper(str(where / "s"))
    h.server = await asyncio.start_unix_server(h.handle, path=h.path)
    yield h
    h.server.close()
    await h.server.wait_closed()
    shutil.rmtree(where, ignore_errors=True)


def progress_line(state: object) -> bytes:
    return b'{"v": 1, "progress": ' + json.dumps(state).encode() + b"}\n"


async def test_an_answer_up_to_four_mebibytes_is_read(helper: RawHelper) -> None:
    """Far more than asyncio's default 64 KiB line: check_all of a big fleet."""
    text = "x" * (4 * 1024 * 1024 - 100)
    helper.answer = b'{"v": 1, "ok": true, "result": {"t": "' + text.encode() + b'"}}\n'
    assert len(helper.answer) < 4 * 1024 * 1024
    assert await call(helper.path, Request(TOKEN, "list"), timeout=30) == {"t": text}
    helper.answer = b'{"v": 1, "ok": true, "result": {"t": "' + b"x" * (4 * 1024 * 1024) + b'"}}\n'
    with pytest.raises(ValueError):
        await call(helper.path, Request(TOKEN, "list"), timeout=30)


async def test_a_progress_line_whose_state_is_not_an_object_is_the_answer(
    helper: RawHelper,
) -> None:
    """Only {"v": 1, "progress": {...}} is progress; anything else ends the exchange as the
    answer (here one the plugin cannot read), and the lines after it are not read."""
    seen: list[object] = []
    result = b'{"v": 1, "ok": true, "result": {"done": true}}\n'
    req = Request(TOKEN, "reset", progress=True)
    for state in (5, [1], "step", None):
        helper.answer = progress_line(state) + result
        with pytest.raises(ProtocolError) as caught:
            await call(helper.path, req, timeout=30, on_progress=seen.append)
        assert (caught.value.code, caught.value.message) == ("internal", "Helper error.")
    assert seen == []
    helper.answer = progress_line({"step": "backup"}) + result
    assert await call(helper.path, req, timeout=30, on_progress=seen.append) == {"done": True}
    assert seen == [{"step": "backup"}]


async def test_progress_lines_are_read_only_when_asked_for(helper: RawHelper) -> None:
    """A request without `progress` takes the first line as the answer, even one that looks
    like progress (and that answer is no result)."""
    helper.answer = progress_line({"step": "backup"}) + b'{"v": 1, "ok": true, "result": {}}\n'
    with pytest.raises(ProtocolError) as caught:
        await call(helper.path, Request(TOKEN, "list"), timeout=30)
    assert (caught.value.code, caught.value.message) == ("internal", "Helper error.")
    assert helper.requests == [{"v": 1, "token": TOKEN, "op": "list"}]


async def test_a_helper_that_closes_without_an_answer_is_a_reset_connection(
    helper: RawHelper,
) -> None:
    helper.answer = b""
    with pytest.raises(ConnectionResetError) as caught:
        await call(helper.path, Request(TOKEN, "check", bridge="signal"), timeout=30)
    assert str(caught.value) == "the helper closed the connection without answering"
    assert helper.requests == [{"v": 1, "token": TOKEN, "op": "check", "bridge": "signal"}]
