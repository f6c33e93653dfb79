"""Run the CLI in-process the way every CLI test wants: no traceback, no secret in the output."""

from __future__ import annotations

import argparse
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


def choose_from(*names: str) -> str:
    """The choices as this Python's argparse lists them in a refusal (3.12.8 and 3.13.1 dropped
    the quotes): the wording is argparse's, the choices are the code's."""
    action = argparse.ArgumentParser().add_argument("x", choices=names)
    try:
        argparse.ArgumentParser()._check_value(action, "?")
    except argparse.ArgumentError as e:
        return str(e).split("(choose from ", 1)[1].removesuffix(")")
    raise AssertionError("argparse took a value that is not a choice")
