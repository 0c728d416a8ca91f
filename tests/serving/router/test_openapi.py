"""Schemathesis against the router's published OpenAPI: generated requests, no server error.

Every operation gets a bounded number of generated requests, first fitting its schema and then
deliberately not, sent with the admin token to the ASGI app (fresh SQLite state, one config
pushed). Each answer goes through schemathesis' default checks: no 5xx, only documented status
codes, answers matching their schema, invalid input refused, authentication enforced. One
check is left out, ``positive_data_acceptance`` (schema-valid input must be accepted): the
router rightly refuses, with 422, schema-valid configs and probes that name a region outside
the catalogue, a stale version or a window ending before it starts, none of which a JSON
schema can express.

The strategies are driven directly with hypothesis: schemathesis' lazy pytest fixture loader
does not work with pytest 9 (it reads a private attribute pytest removed).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from core.settings import Settings
from serving.router.app import create_app
from tests.serving.router.conftest import AUTH, TOKEN, TestClient, allocation, config_json

EXAMPLES_PER_OPERATION = 10


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_no_server_error(settings: Settings, mode: GenerationMode) -> None:
    app = create_app(settings, token=TOKEN)
    with TestClient(app) as client:
        client.post("/v1/config", json=config_json(1, allocation("u1"), allocation("u2")),
                    headers=AUTH)  # fmt: skip
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7

    if mode is GenerationMode.NEGATIVE:  # only inputs can be wrong
        operations = [op for op in operations if len(op.body) or len(op.path_parameters)]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_well(case) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        answers_well()
