"""Session fixtures: one Synapse and one maubot server shared by all e2e tests.

Set BRIDGEDOCTOR_REQUIRE_E2E=1 (CI) to turn a missing Synapse venv into a failure instead of a
skip, and BRIDGEDOCTOR_E2E_KEEP=1 to keep the work dir (configs, databases, logs) afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .sandbox import SYNAPSE_VENV, Maubot, Synapse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("synapse", "maubot"):
            service = funcargs.get(name)
            if isinstance(service, (Synapse, Maubot)):
                report.sections.append(
                    (f"{name} log tail ({service.log_path})", service.log_tail(80))
                )
    return report


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    if not (SYNAPSE_VENV / "bin" / "python").exists():
        reason = f"Synapse venv {SYNAPSE_VENV} missing: run scripts/setup-synapse-venv.sh"
        if os.environ.get("BRIDGEDOCTOR_REQUIRE_E2E"):
            pytest.fail(reason + " (BRIDGEDOCTOR_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="bridgedoctor-e2e-"))
    yield path
    if os.environ.get("BRIDGEDOCTOR_E2E_KEEP"):
        print(f"\nkept e2e work dir: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def synapse(e2e_workdir: Path) -> Iterator[Synapse]:
    server = Synapse(e2e_workdir / "synapse")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def maubot(e2e_workdir: Path, synapse: Synapse) -> Iterator[Maubot]:
    server = Maubot(e2e_workdir / "maubot", synapse)
    try:
        server.start()
        yield server
    finally:
        server.stop()
