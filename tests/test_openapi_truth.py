"""The OpenAPI document tells the truth: each route names its own security scheme, every operation
has a description and examples, a created verification links to the operations on its id, and
every (route, status, problem code) the test suite observed is declared.

This module runs after every other test (``tests/conftest.py``), when
``tests/problem_recorder.OBSERVED`` holds what the whole run saw.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.runtime import Runtime
from tests.conftest import auth
from tests.problem_recorder import OBSERVED

_CODE = re.compile(r"`([a-z0-9_]+)`")


@pytest.fixture
def document(runtime: Runtime) -> dict[str, Any]:
    return create_app(runtime=runtime).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_each_route_names_its_own_security_scheme(document: dict[str, Any]) -> None:
    """Integrator routes take the API key (Bearer or Basic), admin routes the admin session."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert schemes["ClientBasic"]["scheme"] == "basic"
    assert schemes["AdminSession"]["scheme"] == "bearer"
    for path, method, operation in operations(document):
        security = operation.get("security")
        if security is None:
            continue
        if path.startswith("/v1/admin/"):
            assert security == [{"AdminSession": []}], (method, path)
        else:
            assert {"ApiKey": []} in security, (method, path)
            assert {"AdminSession": []} not in security, (method, path)


def test_every_operation_has_a_description_and_examples(document: dict[str, Any]) -> None:
    """A description, a request example (when there is a body) and an example on every
    response with content."""
    for path, method, operation in operations(document):
        assert operation.get("description"), (method, path)
        for media in operation.get("requestBody", {}).get("content", {}).values():
            assert "example" in media or "examples" in media, (method, path, "request")
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                assert "example" in media or "examples" in media, (method, path, status)


def test_create_example_is_the_readme_person(document: dict[str, Any]) -> None:
    """POST /v1/verifications shows the README's person and the masked answer."""
    create = document["paths"]["/v1/verifications"]["post"]
    request = create["requestBody"]["content"]["application/json"]["example"]
    answer = create["responses"]["201"]["content"]["application/json"]["example"]
    assert request["id_number"] == "11010519491231002X"
    assert answer["masked"]["id_number"] == "110105********002X"


def test_created_verification_links_to_the_operations_on_its_id(
    document: dict[str, Any],
) -> None:
    """The 201 of POST /v1/verifications links, with its id, to read, erase, submit and resend
    the code, and issue a token."""
    links = document["paths"]["/v1/verifications"]["post"]["responses"]["201"]["links"]
    item = "#/paths/~1v1~1verifications~1{verification_id}"
    assert {link["operationRef"] for link in links.values()} >= {
        f"{item}/get",
        f"{item}/delete",
        f"{item}~1sms-code/post",
        f"{item}~1sms-code~1resend/post",
        f"{item}~1tokens/post",
    }
    assert all("$response.body#/id" in link["parameters"].values() for link in links.values())


def test_every_dependent_operation_declares_its_503(document: dict[str, Any]) -> None:
    """Every operation that needs the database declares 503 service_unavailable."""
    for path, method, operation in operations(document):
        if path == "/healthz":
            continue
        assert "503" in operation["responses"], (method, path)


async def test_every_observed_problem_is_declared(
    document: dict[str, Any], http: httpx.AsyncClient
) -> None:
    """Each (route, status, problem code) the run observed is declared on that operation."""
    await http.get("/v1/verifications/ver_unknown", headers=auth("rn_test_unknown"))
    undeclared = []
    for method, path, status, code in sorted(OBSERVED, key=str):
        responses = document["paths"].get(path, {}).get(method, {}).get("responses", {})
        declared = responses.get(str(status))
        if declared is None or (
            code is not None and code not in _CODE.findall(declared.get("description", ""))
        ):
            undeclared.append(f"{method.upper()} {path} {status} {code}")
    assert OBSERVED
    assert not undeclared, "undeclared: " + "; ".join(undeclared)
