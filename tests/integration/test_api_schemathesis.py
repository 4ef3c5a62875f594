"""schemathesis against /openapi.json of a real broker process, a bounded number of generated
requests per operation: no 5xx, and every response (status, content type, body) matches what
the document declares for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tq.api import rest
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(300)

SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}
MAX_EXAMPLES = 30  #: generated cases per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("fuzz") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture(scope="module")
def api_schema(broker: BrokerProcess) -> Any:
    url = f"http://127.0.0.1:{broker.ports['rest_port']}"
    return schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=10)


# The operations, read from the routes at collection time: the schema itself only exists once
# the broker runs. (schemathesis.pytest.from_fixture would do this, but its lazy loader
# breaks on pytest 9: it sets Function._nodeid.)
def _cases() -> list[tuple[str, str, GenerationMode]]:
    out = []
    for route in [*rest.router.routes, *rest.health.routes]:
        if not isinstance(route, APIRoute):
            continue
        d = route.dependant
        takes_input = bool(d.path_params or d.query_params or d.body_params)
        for method in sorted(route.methods or ()):
            out += [(method, route.path, GenerationMode.POSITIVE)]
            if takes_input:  # nothing to negate otherwise
                out += [(method, route.path, GenerationMode.NEGATIVE)]
    return out


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_every_operation_conforms_to_its_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=10)

    check()
