"""GET /v1/verifications: a client lists its own verifications, newest first, page by page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import auth
from tests.support import new_person


async def create(http: httpx.AsyncClient, key: str, **changes: Any) -> dict[str, Any]:
    r = await http.post("/v1/verifications", json=new_person(**changes), headers=auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_lists_own_verifications_newest_first_in_pages(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """Five verifications, pages of two: every one once, newest first, then no cursor."""
    _, key = await make_client("test", level="L1")
    made = [(await create(http, key))["id"] for _ in range(5)]
    seen: list[str] = []
    after: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = (await http.get("/v1/verifications", params=params, headers=auth(key))).json()
        seen += [v["id"] for v in page["data"]]
        after = page["next_cursor"]
    assert seen == list(reversed(made))
    assert after is None


async def test_other_clients_verifications_are_not_listed(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """A client never sees another client's verifications."""
    _, mine = await make_client("test", level="L1", name="mine")
    _, theirs = await make_client("test", level="L1", name="theirs")
    own = await create(http, mine)
    await create(http, theirs)
    page = (await http.get("/v1/verifications", headers=auth(mine))).json()
    assert [v["id"] for v in page["data"]] == [own["id"]]


@pytest.mark.usefixtures("queued_checks")
async def test_filters_by_external_user_status_and_creation_time(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """external_user_id, status and created_after narrow the list."""
    _, key = await make_client("test", level="L1")
    first = await create(http, key, external_user_id="reconcile-me")
    second = await create(http, key)

    async def ids(**params: str) -> list[str]:
        r = await http.get("/v1/verifications", params=params, headers=auth(key))
        assert r.status_code == 200, r.text
        return [v["id"] for v in r.json()["data"]]

    assert await ids(external_user_id="reconcile-me") == [first["id"]]
    assert set(await ids(status="pending")) == {first["id"], second["id"]}
    assert await ids(status="verified") == []
    assert set(await ids(created_after=first["created_at"].replace("+00:00", "Z"))) >= {
        second["id"]
    }
    assert await ids(created_after="2999-01-01T00:00:00Z") == []


async def test_listing_shows_masked_values_only(http: httpx.AsyncClient, make_client: Any) -> None:
    """The listed objects carry masked values, never the submitted name, ID number or phone."""
    _, key = await make_client("test", level="L1")
    person = new_person()
    await http.post("/v1/verifications", json=person, headers=auth(key))
    r = await http.get("/v1/verifications", headers=auth(key))
    for value in (person["real_name"], person["id_number"], person["phone"]):
        assert str(value) not in r.text
    assert r.json()["data"][0]["masked"]["real_name"].endswith("*")


async def test_bad_filters_are_problems(http: httpx.AsyncClient, make_client: Any) -> None:
    """An unknown status, a foreign cursor, a bad time or limit are 422 invalid_request."""
    _, key = await make_client("test", level="L1")
    for params in (
        {"status": "nope"},
        {"after": "bm90LWEtY3Vyc29y"},
        {"created_after": "yesterday"},
        {"limit": "0"},
    ):
        r = await http.get("/v1/verifications", params=params, headers=auth(key))
        assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), params
