"""Schemathesis against the running server: generated requests for every operation of
/api/bg/openapi.json, each answer checked against the document (status, content type,
headers, body schema) and never a 5xx. Bounded: a few dozen examples per operation."""
from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, settings

schema = schemathesis.pytest.from_fixture("live_schema")


@pytest.fixture(scope="module")
def live_schema(u2netp_server):
    loaded = schemathesis.openapi.from_url(u2netp_server.url + "/api/bg/openapi.json")
    # The coverage phase's case count is not bounded by max_examples (hundreds of model
    # runs); the explicit examples and the bounded fuzzing phase run.
    loaded.config.phases.coverage.enabled = False
    return loaded


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(case):
    # To a schema the upload is any bytes ("format: binary"), while the API must refuse
    # bytes that are not an image, so "a schema-valid request is accepted" can't hold
    # for the upload endpoints; every other check runs, including that schema-invalid
    # requests are refused.
    case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])
