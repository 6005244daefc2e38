"""The standalone mock registry server, through ASGITransport."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.mock_registry_server import DEFAULT_PORT, create_mock_registry_app, serve

ID_NUMBER = "310104200002290030"
PHONE = "+8613800138000"
TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Connect = Callable[[FastAPI], httpx.AsyncClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds clients for an app and closes them after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(app: FastAPI) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://registry"))
        return clients[-1]

    yield build
    for client in clients:
        await client.aclose()


def _id_body(name: str = "张三") -> dict[str, str]:
    return {"real_name": name, "id_number": ID_NUMBER}


def _carrier_body(name: str = "张三") -> dict[str, str]:
    return {**_id_body(name), "phone": PHONE}


@pytest.mark.parametrize(
    ("path", "body", "status", "result"),
    [
        ("/v1/id-check", _id_body(), 200, "match"),
        ("/v1/id-check", _id_body("不一致"), 200, "mismatch"),
        ("/v1/id-check", _id_body("查无此人"), 200, "not_found"),
        ("/v1/id-check", _id_body("信息有误"), 200, "invalid_identity"),
        ("/v1/id-check", _id_body("号码不符"), 200, "match"),
        ("/v1/id-check", _id_body("服务异常"), 503, "unavailable"),
        ("/v1/id-check", _id_body("系统维护"), 503, "maintenance"),
        ("/v1/id-check", _id_body("超出限额"), 429, "quota_exceeded"),
        ("/v1/carrier-check", _carrier_body(), 200, "match"),
        ("/v1/carrier-check", _carrier_body("号码不符"), 200, "phone_mismatch"),
        ("/v1/carrier-check", _carrier_body("服务异常"), 503, "unavailable"),
        ("/v1/carrier-check", _carrier_body("超出限额"), 429, "quota_exceeded"),
    ],
)
async def test_answers_with_documented_status(
    connect: Connect, path: str, body: dict[str, str], status: int, result: str
) -> None:
    """Each answer comes with its documented HTTP status and a UUID request id."""
    client = connect(create_mock_registry_app())

    response = await client.post(path, json=body)

    assert response.status_code == status
    assert response.json()["result"] == result
    uuid.UUID(response.json()["request_id"])


async def test_malformed_identity_is_an_answer(connect: Connect) -> None:
    """Well-shaped JSON with a malformed ID number is a 200 invalid_identity answer."""
    client = connect(create_mock_registry_app())

    response = await client.post("/v1/id-check", json=_id_body() | {"id_number": "123"})

    assert (response.status_code, response.json()["result"]) == (200, "invalid_identity")


async def test_fixture_path_is_used(connect: Connect, tmp_path: Path) -> None:
    """The server answers from the integrator's known-people file."""
    fixture = tmp_path / "people.json"
    fixture.write_text(json.dumps({ID_NUMBER: {"real_name": "李四"}}), encoding="utf-8")
    client = connect(create_mock_registry_app(fixture))

    response = await client.post("/v1/id-check", json=_id_body("张三"))

    assert response.json()["result"] == "mismatch"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
@pytest.mark.parametrize("path", ["/v1/id-check", "/v1/carrier-check"])
async def test_token_required_when_configured(
    connect: Connect, headers: dict[str, str], path: str
) -> None:
    """With a token configured, a request without the right bearer token gets 401."""
    client = connect(create_mock_registry_app(api_token=TOKEN))

    response = await client.post(path, json=_carrier_body(), headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "result" not in response.json()


async def test_right_token_is_accepted(connect: Connect) -> None:
    """The configured bearer token (scheme case-insensitive) lets the request through."""
    client = connect(create_mock_registry_app(api_token=TOKEN))

    response = await client.post(
        "/v1/id-check", json=_id_body(), headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status_code == 200


async def test_no_token_needed_when_none_configured(connect: Connect) -> None:
    """Without a configured token, requests need no Authorization header."""
    client = connect(create_mock_registry_app())

    response = await client.post("/v1/id-check", json=_id_body())

    assert response.status_code == 200


async def test_healthz_needs_no_token(connect: Connect) -> None:
    """The health check answers without a token even when one is configured."""
    client = connect(create_mock_registry_app(api_token=TOKEN))

    response = await client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_empty_token_is_refused() -> None:
    """An empty token is a configuration error, not "no authentication"."""
    with pytest.raises(ValueError, match="api_token"):
        create_mock_registry_app(api_token="")


async def test_same_idempotency_key_gives_same_request_id(connect: Connect) -> None:
    """A retried request with the same Idempotency-Key gets the same request id."""
    client = connect(create_mock_registry_app())
    headers = {"Idempotency-Key": "attempt-7"}

    first = await client.post("/v1/id-check", json=_id_body(), headers=headers)
    second = await client.post("/v1/id-check", json=_id_body(), headers=headers)
    third = await client.post("/v1/id-check", json=_id_body())

    assert first.json()["request_id"] == second.json()["request_id"]
    assert third.json()["request_id"] != first.json()["request_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"real_name": "张三"},
        {"real_name": "张三", "id_number": 310104200002290030},
        {"real_name": "张三" * 200, "id_number": ID_NUMBER},
        ["张三", ID_NUMBER],
    ],
    ids=["missing", "number", "too-long", "list"],
)
async def test_malformed_body_is_422_without_echo(connect: Connect, body: Any) -> None:
    """A body of the wrong shape is refused with 422 and the answer never echoes the input."""
    client = connect(create_mock_registry_app())

    response = await client.post("/v1/carrier-check", json=body)

    assert response.status_code == 422
    assert "张三" not in response.text
    assert "310104" not in response.text


async def test_logs_hold_no_personal_data(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Serving answers and errors logs no name, ID number or phone."""
    caplog.set_level(logging.DEBUG)
    client = connect(create_mock_registry_app(api_token=TOKEN))

    for name in ("张三", "服务异常", "号码不符"):
        await client.post("/v1/carrier-check", json=_carrier_body(name), headers=AUTH)
    await client.post("/v1/carrier-check", json=_carrier_body())
    await client.post("/v1/carrier-check", json={"real_name": "张三"}, headers=AUTH)

    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for value in ("张三", "服务异常", ID_NUMBER, PHONE, PHONE[3:]):
        assert value not in logged


def test_serve_runs_uvicorn_with_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() hands the app, host and port to uvicorn.run."""
    calls: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))

    serve("127.0.0.1", DEFAULT_PORT, None, TOKEN)

    ((app, kwargs),) = calls
    assert isinstance(app, FastAPI)
    assert kwargs == {"host": "127.0.0.1", "port": 8090}


def test_serve_warns_when_exposed_without_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Binding beyond loopback without a token logs a warning."""
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)

    serve("0.0.0.0", DEFAULT_PORT, None, None)  # noqa: S104

    assert "without an API token" in caplog.text
