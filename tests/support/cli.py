"""Run the CLI in-process the way every CLI test wants: no traceback, no secret in the output."""

from __future__ import annotations

import json

import pytest

from bridgedoctor.cli.main import main

from .fleet import SECRETS as HOST_SECRETS
from .inventory import SECRETS as INVENTORY_SECRETS

SECRETS = HOST_SECRETS + INVENTORY_SECRETS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text
    for secret in SECRETS:
        assert secret not in text, "a secret leaked into the output"
    return code, text


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, text = run(capsys, *argv, "--json")
    return code, json.loads(text)
