"""The OpenAPI document is valid, names exactly the app's routes, and live answers fit it."""
from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


@pytest.fixture(scope="module")
def spec(u2netp_server) -> dict:
    response = u2netp_server.get("/api/bg/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_document_is_valid_openapi(spec):
    validate(spec)


def test_document_names_exactly_the_apps_routes(app, spec):
    routes = {(method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert documented == routes


def fits(spec: dict, path: str, method: str, status: str, body) -> None:
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    # the components travel with the schema so that its "#/components/..." references resolve
    Draft202012Validator({**schema, "components": spec["components"]}).validate(body)


@pytest.mark.parametrize("method, path", [("get", "/api/bg/health"), ("get", "/api/bg/status"),
                                          ("get", "/api/bg/ready"), ("post", "/api/bg/clear_cache")])
def test_json_answers_fit_their_schemas(u2netp_server, spec, method, path):
    response = getattr(u2netp_server, method)(path)
    assert response.status_code == 200
    fits(spec, path, method, "200", response.json())


def test_error_answers_fit_the_error_schema(u2netp_server, spec):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("a.png", b"not an image")})
    assert response.status_code == 400
    fits(spec, "/api/bg/remove", "post", "400", response.json())


def test_documented_limits_follow_the_settings(spec):
    assert "8 MB" in spec["info"]["description"] and "1024 px" in spec["info"]["description"]
