"""The `deep` flag through the helper protocol: only on `check`, only a JSON boolean, and its own
time limit (deep_timeout) in the real helper over a real socket."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from bridgedoctor import protocol
from tests.test_helper_server import TOKEN, error_code, fleet, sockdir, start

__all__ = ["fleet", "sockdir", "start"]  # fixtures used by name below


def line(**body: Any) -> bytes:
    return json.dumps({"v": protocol.VERSION, "token": TOKEN, **body}).encode() + b"\n"


def test_deep_round_trips_only_on_check() -> None:
    req = protocol.Request(token=TOKEN, op="check", bridge="whatsapp", deep=True)
    assert protocol.decode_request(protocol.encode_request(req)) == req
    plain = protocol.Request(token=TOKEN, op="check", bridge="whatsapp")
    assert b"deep" not in protocol.encode_request(plain)
    assert protocol.decode_request(line(op="check", bridge="x", deep=False)).deep is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"op": "list", "deep": True}, "Operation list takes no deep."),
        ({"op": "check_all", "deep": False}, "Operation check_all takes no deep."),
        ({"op": "check", "bridge": "x", "deep": 1}, "The request's deep must be true or false."),
        (
            {"op": "check", "bridge": "x", "deep": "yes"},
            "The request's deep must be true or false.",
        ),
    ],
)
def test_deep_refused_elsewhere_or_not_boolean(body: dict[str, Any], message: str) -> None:
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.decode_request(line(**body))
    assert (err.value.code, err.value.message) == (protocol.E_BAD_REQUEST, message)


def test_helper_answers_a_deep_check(start: Any) -> None:
    helper = start()
    body = helper.ask({"v": 1, "token": TOKEN, "op": "check", "bridge": "whatsapp", "deep": True})
    codes = [f["code"] for f in body["result"]["findings"]]
    assert "crypto_store_verified" in codes, codes
    plain = helper.req("check", "whatsapp")["result"]["findings"]
    assert "crypto_store_verified" not in [f["code"] for f in plain]


def test_deep_check_has_its_own_time_limit(start: Any) -> None:
    """A "PostgreSQL" that never answers: the deep check stops at deep_timeout (0.3 s), although
    request_timeout (60 s) would still let a plain check wait."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        helper = start(
            request_timeout=60, deep_timeout=0.3, db_host=f"127.0.0.1:{mute.getsockname()[1]}"
        )
        body = helper.ask(
            {"v": 1, "token": TOKEN, "op": "check", "bridge": "whatsapp", "deep": True},
            timeout=10,
        )
        assert error_code(body) == "timeout"
