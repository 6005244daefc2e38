"""Admission control of registrations: past ``REALNAME_REGISTRATION_MAX_IN_FLIGHT`` in flight in
one process, ``POST /v1/verifications`` is refused at once (503 ``overloaded``, ``Retry-After``)
and nothing of the refused request is stored.

Registrations are held inside the identity hash (the slow part of a registration) by a hasher
that waits for an event, so that "in flight" is a state the test controls, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app import metrics
from app.admission import Gate
from app.runtime import Runtime
from app.settings import Settings
from bench.identities import People
from realname_sdk import AsyncRealnameClient
from tests.conftest import auth

#: What a registration may write; a refused one must leave every count as it was.
TABLES = (
    "verifications",
    "identities",
    "client_identities",
    "checks",
    "idempotency_keys",
    "audit_events",
    "events",
    "outbox_jobs",
)


class HeldHasher:
    """Stands in for ``runtime.identity_hasher.hash``: each call waits for :attr:`release`
    (then hashes for real), so registrations stay in flight until the test lets them go."""

    def __init__(self, real: Callable[[bytes | str], Awaitable[str]]) -> None:
        self.real = real
        self.entered = 0
        self.release = asyncio.Event()

    async def hash(self, secret: bytes | str) -> str:
        self.entered += 1
        await self.release.wait()
        return await self.real(secret)


class WatchedGate(Gate):
    """The service's gate, telling the test when places are taken."""

    def __init__(self, limit: int, *, retry_after: int = 1) -> None:
        super().__init__("registration", limit, retry_after=retry_after)
        self.changed = asyncio.Event()

    def try_enter(self) -> bool:
        admitted = super().try_enter()
        self.changed.set()
        return admitted

    async def holding(self, count: int) -> None:
        """Wait until ``count`` registrations hold a place (held in the hash or, on SQLite,
        behind the one writer held there, waiting for the database)."""
        async with asyncio.timeout(10):  # a safeguard against a hang, not a timing assertion
            while self.in_flight < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def held(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> HeldHasher:
    hasher = HeldHasher(runtime.identity_hasher.hash)
    monkeypatch.setattr(runtime.identity_hasher, "hash", hasher.hash)
    return hasher


@pytest.fixture
def limit(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], WatchedGate]:
    """Give this process's registration gate another limit for the test."""

    def _set(n: int) -> WatchedGate:
        gate = WatchedGate(n)
        monkeypatch.setattr(runtime, "registrations", gate)
        return gate

    return _set


class Bodies:
    """Registration bodies of new, valid people (the bench's generator)."""

    def __init__(self) -> None:
        self.people = People(seed=16)

    def __call__(self) -> dict[str, Any]:
        p = self.people.person()
        return {
            "external_user_id": p.external_user_id,
            "real_name": p.real_name,
            "id_number": p.id_number,
            "phone": p.phone,
            "consent": {"policy_version": "2026-01"},
        }


@pytest.fixture
def person() -> Bodies:
    return Bodies()


async def counts(runtime: Runtime) -> dict[str, int]:
    """Committed rows per table, read while registrations may hold a write transaction (on
    SQLite outside any transaction: the service's ``BEGIN IMMEDIATE`` would wait for them)."""
    statements = {t: f"SELECT count(*) FROM {t}" for t in TABLES}  # noqa: S608 (fixed names)
    async with runtime.engine.connect() as conn:
        if not runtime.settings.is_sqlite:
            return {
                t: int((await conn.execute(text(q))).scalar_one()) for t, q in statements.items()
            }
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        out = {}
        for table, query in statements.items():
            async with raw.execute(query) as cursor:
                row = await cursor.fetchone()
                out[table] = int(row[0])
        return out


async def start(http: httpx.AsyncClient, key: str, body: dict[str, Any], **headers: str) -> Any:
    return asyncio.create_task(
        http.post("/v1/verifications", json=body, headers=auth(key, **headers))
    )


def refusals() -> float:
    value: float = metrics.ADMISSION_REFUSALS.labels("registration")._value.get()
    return value


@pytest.fixture
async def two_held(
    http: httpx.AsyncClient,
    api_key: str,
    held: HeldHasher,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """A limit of 2 and two registrations in flight, held inside their hash."""
    gate = limit(2)
    tasks = [await start(http, api_key, person()) for _ in range(2)]
    await gate.holding(2)
    yield tasks
    held.release.set()
    await asyncio.gather(*tasks)


async def test_registration_past_the_limit_is_refused_at_once(
    http: httpx.AsyncClient,
    api_key: str,
    runtime: Runtime,
    held: HeldHasher,
    two_held: list[asyncio.Task[httpx.Response]],
    person: Bodies,
) -> None:
    """With 2 in flight and a limit of 2, the third gets 503 overloaded with Retry-After while
    the two are still held, and stores nothing."""
    before, refused, hashed = await counts(runtime), refusals(), held.entered
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["Retry-After"] == "1"
    problem = r.json()
    assert problem["code"] == "overloaded"
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert not any(t.done() for t in two_held)  # answered while the others are still held
    assert held.entered == hashed  # it never reached the hash
    assert await counts(runtime) == before
    assert refusals() == refused + 1


async def test_a_refusal_keeps_no_personal_value(
    http: httpx.AsyncClient,
    api_key: str,
    two_held: list[asyncio.Task[httpx.Response]],
    person: Bodies,
) -> None:
    """The overloaded answer carries nothing of the request it refused."""
    body = person()
    r = await http.post("/v1/verifications", json=body, headers=auth(api_key))
    assert r.status_code == 503
    for value in (body["real_name"], body["id_number"], body["phone"], body["external_user_id"]):
        assert value not in r.text


async def test_the_two_admitted_finish_and_a_new_one_is_accepted_after(
    http: httpx.AsyncClient,
    api_key: str,
    held: HeldHasher,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """Once the registrations in flight have finished, their places are free again."""
    gate = limit(2)
    tasks = [await start(http, api_key, person()) for _ in range(2)]
    await gate.holding(2)
    refused = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert refused.status_code == 503
    held.release.set()
    assert [r.status_code for r in await asyncio.gather(*tasks)] == [201, 201]
    assert gate.in_flight == 0
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert r.status_code == 201, r.text


async def test_a_refused_registration_retried_with_its_key_is_a_first_attempt(
    http: httpx.AsyncClient,
    api_key: str,
    held: HeldHasher,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """A registration refused as overloaded stored no idempotent answer: its retry with the same
    Idempotency-Key is done normally, and a further retry replays that answer."""
    gate = limit(2)
    tasks = [await start(http, api_key, person()) for _ in range(2)]
    await gate.holding(2)
    body = person()
    headers = auth(api_key, **{"Idempotency-Key": "signup-overloaded-1"})
    refused = await http.post("/v1/verifications", json=body, headers=headers)
    assert refused.status_code == 503
    held.release.set()
    await asyncio.gather(*tasks)
    retried = await http.post("/v1/verifications", json=body, headers=headers)
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    again = await http.post("/v1/verifications", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == retried.json()["id"]


async def test_limit_zero_admits_every_registration(
    http: httpx.AsyncClient,
    api_key: str,
    held: HeldHasher,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """A limit of 0 turns admission control off: many registrations are in flight at once."""
    gate = limit(0)
    tasks = [await start(http, api_key, person()) for _ in range(6)]
    await gate.holding(6)
    held.release.set()
    assert [r.status_code for r in await asyncio.gather(*tasks)] == [201] * 6


async def test_a_refused_body_gives_its_place_back(
    http: httpx.AsyncClient,
    api_key: str,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """A registration answered 422 (its body validated after admission) leaks no place."""
    gate = limit(1)
    for _ in range(3):
        r = await http.post(
            "/v1/verifications", json={**person(), "id_number": "123"}, headers=auth(api_key)
        )
        assert r.status_code == 422
        assert gate.in_flight == 0
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert r.status_code == 201, r.text


async def test_a_problem_raised_in_the_route_gives_its_place_back(
    http: httpx.AsyncClient,
    api_key: str,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """A registration refused inside the route (409 identity_in_use) leaks no place."""
    gate = limit(1)
    body = person()
    assert (
        await http.post("/v1/verifications", json=body, headers=auth(api_key))
    ).status_code == 201
    other_user = {**body, "external_user_id": body["external_user_id"] + "-b"}
    r = await http.post("/v1/verifications", json=other_user, headers=auth(api_key))
    assert r.status_code == 409, r.text
    assert gate.in_flight == 0
    assert (
        await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    ).status_code == 201


async def test_an_exception_in_the_route_gives_its_place_back(
    http: httpx.AsyncClient,
    api_key: str,
    runtime: Runtime,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected exception inside the route (here a lost connection, answered 503) leaks
    no place either."""
    gate = limit(1)
    real = runtime.identity_hasher.hash

    async def lost(secret: bytes | str) -> str:
        raise ConnectionError("the hash pool's host went away")

    monkeypatch.setattr(runtime.identity_hasher, "hash", lost)
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert r.status_code == 503
    assert r.json()["code"] == "service_unavailable"
    assert gate.in_flight == 0
    monkeypatch.setattr(runtime.identity_hasher, "hash", real)
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert r.status_code == 201, r.text


async def test_a_connection_pool_with_none_free_is_answered_503(
    http: httpx.AsyncClient,
    api_key: str,
    runtime: Runtime,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting past the pool's timeout for a database connection (SQLAlchemy's pool
    TimeoutError) is answered 503 service_unavailable with Retry-After, never 500, and the
    place is given back."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    gate = limit(2)

    async def exhausted(secret: bytes | str) -> str:
        raise PoolTimeout("QueuePool limit of size 15 overflow 0 reached, connection timed out")

    monkeypatch.setattr(runtime.identity_hasher, "hash", exhausted)
    r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
    assert (r.status_code, r.json()["code"]) == (503, "service_unavailable")
    assert r.headers["retry-after"] == "1"
    assert gate.in_flight == 0


async def test_other_routes_are_not_counted(
    http: httpx.AsyncClient,
    api_key: str,
    limit: Callable[[int], WatchedGate],
    person: Bodies,
) -> None:
    """With every registration place taken, registrations are refused and other requests of
    the same client are still answered."""
    gate = limit(1)
    assert gate.try_enter()  # the place is taken (as by a registration in flight)
    try:
        r = await http.post("/v1/verifications", json=person(), headers=auth(api_key))
        assert r.status_code == 503
        assert (await http.get("/v1/verifications", headers=auth(api_key))).status_code == 200
    finally:
        gate.leave()


class FreedAfterOneRefusal(WatchedGate):
    """A full gate whose place (taken by the test) is given back once it has refused once."""

    def try_enter(self) -> bool:
        admitted = super().try_enter()
        if not admitted and self.refused == 1:
            self.leave()
        return admitted


async def test_the_sdk_retries_an_overloaded_registration(
    http: httpx.AsyncClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    person: Bodies,
) -> None:
    """The SDK waits out an overloaded answer's Retry-After and sends the registration again
    (same Idempotency-Key); it is created once."""
    gate = FreedAfterOneRefusal(1, retry_after=0)
    monkeypatch.setattr(runtime, "registrations", gate)
    assert gate.try_enter()  # full, until the first refusal
    body = person()
    async with AsyncRealnameClient(str(http.base_url), api_key, http_client=http) as client:
        created = await client.create_verification(
            external_user_id=body["external_user_id"],
            real_name=body["real_name"],
            id_number=body["id_number"],
            phone=body["phone"],
        )
    assert created.id.startswith("ver_")
    assert (gate.refused, gate.in_flight) == (1, 0)
    assert (await counts(runtime))["verifications"] == 1


def test_the_default_limit_follows_the_hash_workers() -> None:
    """Unset, the limit is 8 per hash worker, at most 24 (two per database connection left
    beside other requests); an explicit value, 0 (no limit) included, is kept."""
    assert Settings(hash_workers=2, _env_file=None).registration_in_flight_limit == 16
    assert Settings(hash_workers=8, _env_file=None).registration_in_flight_limit == 24
    explicit = Settings(hash_workers=3, registration_max_in_flight=5, _env_file=None)
    assert explicit.registration_in_flight_limit == 5
    off = Settings(registration_max_in_flight=0, _env_file=None)
    assert off.registration_in_flight_limit == 0


def test_the_gate_counts_places() -> None:
    """The gate admits up to its limit, refuses past it and admits again after a leave."""
    gate = Gate("test", 2, retry_after=3)
    assert gate.try_enter()
    assert gate.try_enter()
    assert not gate.try_enter()
    gate.leave()
    assert gate.try_enter()
    assert (gate.in_flight, gate.refused, gate.retry_after) == (2, 1, 3)
