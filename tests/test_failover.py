"""Provider failover and cost: an ordered chain of ID registries for live clients, falling over
only when a provider is unavailable, never after a definite (billed) answer; billable calls
counted per provider and client, and shown per client and day with each breaker's state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.metrics import REGISTRY
from app.providers.breaker import CircuitBreaker
from app.runtime import Runtime
from app.settings import Settings, SettingsError
from app.verifiers.aliyun_cloudauth import AliyunId2MetaVerifier
from app.verifiers.http_registry import HttpIdRegistryVerifier
from app.verifiers.registry import build_verifiers
from app.worker import Worker
from tests.conftest import auth
from tests.test_admin_api import admin_token, bearer
from tests.test_intake import GOOD

REQUEST_ID = "D6163397-15C5-419C-9ACC-B7C83E0B4C10"


@dataclass
class Provider:
    """A provider's server behind httpx.MockTransport: plays one reply, counts requests."""

    reply: Callable[[], httpx.Response]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply()


def registry_down() -> httpx.Response:
    return httpx.Response(503)


def aliyun_answer(biz_code: str) -> Callable[[], httpx.Response]:
    body = {"RequestId": REQUEST_ID, "Code": "200", "ResultObject": {"BizCode": biz_code}}
    return lambda: httpx.Response(200, json=body)


def registry_match() -> httpx.Response:
    return httpx.Response(200, json={"result": "match", "request_id": REQUEST_ID})


async def no_sleep(_: float) -> None:
    return None


def registry_verifier(client: httpx.AsyncClient) -> Any:
    return HttpIdRegistryVerifier(client, "http://registry.test", max_attempts=1, sleep=no_sleep)


def aliyun_verifier(client: httpx.AsyncClient) -> Any:
    return AliyunId2MetaVerifier(
        client,
        access_key_id="LTAItest",
        access_key_secret="secret-for-tests",
        max_attempts=1,
        sleep=no_sleep,
    )


@pytest.fixture
async def chain(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Installs a live id_registry chain: each link a verifier factory with its provider's
    server; returns the verifiers in order."""
    clients: list[httpx.AsyncClient] = []

    def install(*links: tuple[Callable[[httpx.AsyncClient], Any], Provider]) -> list[Any]:
        verifiers = []
        for build, provider in links:
            clients.append(httpx.AsyncClient(transport=httpx.MockTransport(provider)))
            verifiers.append(build(clients[-1]))
        monkeypatch.setitem(runtime.verifiers.live, "id_registry", verifiers)
        return verifiers

    yield install
    for client in clients:
        await client.aclose()


async def verify_live(http: httpx.AsyncClient, key: str, worker: Worker) -> dict[str, Any]:
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(key))
    assert r.status_code == 201, r.text
    await worker.run_until_idle(max_wait=3)
    return dict((await http.get(f"/v1/verifications/{r.json()['id']}", headers=auth(key))).json())


async def answered_by(runtime: Runtime, verification_id: str) -> str:
    async with runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT verifier FROM checks"
                    " WHERE verification_id = :v AND type = 'id_registry'"
                ),
                {"v": verification_id},
            )
        ).one()
    return str(row[0])


async def test_first_registry_down_verifies_through_the_second(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime, chain: Any
) -> None:
    """With the first registry down, the second answers; the check records that it did."""
    down, aliyun = Provider(registry_down), Provider(aliyun_answer("1"))
    chain((registry_verifier, down), (aliyun_verifier, aliyun))
    _, key = await make_client("live", level="L1")

    v = await verify_live(http, key, worker)

    assert v["status"] == "verified"
    assert (len(down.requests), len(aliyun.requests)) == (1, 1)
    assert await answered_by(runtime, v["id"]) == "aliyun_id2meta"


async def test_an_open_breaker_falls_over_without_a_call(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, chain: Any
) -> None:
    """A first provider whose breaker is open is not called; the second answers."""
    down, aliyun = Provider(registry_down), Provider(aliyun_answer("1"))
    registry, _ = chain((registry_verifier, down), (aliyun_verifier, aliyun))
    registry.breaker = CircuitBreaker(failure_threshold=1)
    registry.breaker.record_failure()
    _, key = await make_client("live", level="L1")

    v = await verify_live(http, key, worker)

    assert v["status"] == "verified"
    assert down.requests == []


async def test_a_mismatch_is_final_and_not_asked_elsewhere(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, chain: Any
) -> None:
    """A billed mismatch from the first provider rejects at once: the second is never asked."""
    first, second = Provider(aliyun_answer("2")), Provider(registry_match)
    chain((aliyun_verifier, first), (registry_verifier, second))
    _, key = await make_client("live", level="L1")

    v = await verify_live(http, key, worker)

    assert (v["status"], v["checks"][0]["reason"]) == ("rejected", "id_mismatch")
    assert (len(first.requests), len(second.requests)) == (1, 0)


async def test_billed_calls_are_counted_and_priced_per_provider_and_client(
    http: httpx.AsyncClient,
    make_client: Any,
    worker: Worker,
    runtime: Runtime,
    chain: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A billed answer adds one call and its configured price to the provider's and client's
    metrics; the admin stats show it for the client and day with each breaker's state, and the
    admin detail names the verifier that answered."""
    monkeypatch.setattr(
        runtime,
        "settings",
        runtime.settings.model_copy(update={"provider_prices": {"aliyun_id2meta": 0.25}}),
    )
    chain(
        (registry_verifier, Provider(registry_down)),
        (aliyun_verifier, Provider(aliyun_answer("1"))),
    )
    client_id, key = await make_client("live", level="L1")
    labels = {"provider": "aliyun_id2meta", "client": client_id}

    v = await verify_live(http, key, worker)

    assert REGISTRY.get_sample_value("realname_billable_calls_total", labels) == 1
    assert REGISTRY.get_sample_value("realname_estimated_cost_yuan_total", labels) == 0.25
    token = await admin_token(http, runtime, "auditor")
    stats = (await http.get("/v1/admin/stats", headers=bearer(token))).json()
    assert [
        (c["client_id"], c["provider"], c["billable_calls"], c["estimated_cost"])
        for c in stats["costs"]
    ] == [(client_id, "aliyun_id2meta", 1, 0.25)]
    assert stats["breakers"]["aliyun_id2meta"] == "closed"
    detail = (await http.get(f"/v1/admin/verifications/{v['id']}", headers=bearer(token))).json()
    assert detail["checks"][0]["verifier"] == "aliyun_id2meta"


def test_a_chain_may_not_name_a_verifier_twice(runtime: Runtime) -> None:
    """REALNAME_LIVE_VERIFIERS with the same verifier twice in a chain stops start-up."""
    settings = Settings(
        live_verifiers={"id_registry": ["http_id_registry"] * 2, "carrier_3e": "http_carrier_3e"},
        _env_file=None,  # type: ignore[call-arg]
    )

    with pytest.raises(SettingsError, match="distinct"):
        build_verifiers(settings, runtime.http_client)


async def test_admin_providers_page_shows_cost_and_breakers(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime, chain: Any
) -> None:
    """The admin UI's providers page lists each breaker's state and the day's billable calls of
    the client, by name."""
    from tests.ui.test_ui_pages import make_admin, sign_in

    chain(
        (registry_verifier, Provider(registry_down)),
        (aliyun_verifier, Provider(aliyun_answer("1"))),
    )
    _, key = await make_client("live", level="L1", name="Costly Shop")
    await verify_live(http, key, worker)
    await sign_in(http, await make_admin(runtime, "auditor"))

    page = await http.get("/admin/providers")

    assert page.status_code == 200
    assert "Costly Shop" in page.text
    assert "aliyun_id2meta" in page.text
    assert "breaker-closed" in page.text
