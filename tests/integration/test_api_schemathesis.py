"""The OpenAPI document is the contract: schemathesis runs every check (``-c all``: no 5xx;
responses, statuses, headers and content types as declared; requests valid by the schema
accepted and invalid ones refused; 405 with an exact ``Allow`` for undeclared methods; a
created task found and a deleted one gone) through every phase (examples, coverage, fuzzing
and the stateful phase, which follows the document's links from a submit to the task's
routes) against a real broker process: once with auth off, once with auth on and an admin
key (schemathesis then also checks that every secured operation refuses a request without
the key, or with a wrong one, with 401).

A bounded run, with a fixed seed so that ``make test`` is repeatable; to search wider, run
the same command with more examples and no seed against ``tq dev`` (REST on port 8080)::

    .venv/bin/schemathesis run http://127.0.0.1:8080/openapi.json -c all -n 1000
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(300)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}
MAX_EXAMPLES = 60  #: per operation and phase: about 1,000 requests, 10-30 s on 2 busy cores
SEED = 20_240_901
RUN_TIMEOUT_S = 240


ADMIN = new_api_key()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("fuzz") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("fuzz-auth") / "data"
    with BrokerProcess(data, settings=SETTINGS, api_key=ADMIN) as b:
        yield b


def test_the_api_conforms_to_its_openapi_document_by_every_check_and_phase(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    conforms(broker, tmp_path)


def test_with_auth_on_the_api_conforms_too_and_refuses_what_has_no_key(
    secured: BrokerProcess, tmp_path: Path
) -> None:
    doc = conforms(secured, tmp_path, "--header", f"Authorization: Bearer {ADMIN}")
    assert "Authentication declared but not enforced" not in doc


def conforms(broker: BrokerProcess, tmp_path: Path, *extra: str) -> str:
    """Run schemathesis against ``broker``; its report (the run must pass)."""
    url = f"http://127.0.0.1:{broker.ports['rest_port']}/openapi.json"
    argv = [
        str(SCHEMATHESIS), "run", url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
        *extra,
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    report = done.stdout[-12_000:] + done.stderr[-2_000:]
    assert done.returncode == 0, report
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in done.stdout, f"{phase} did not run and pass:\n{report}"
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts is not None, report
    assert int(counts[1]) == int(counts[2]) >= 500, report  # a run that tested something
    return done.stdout
