"""Clients and their API keys through the admin API, the CLI and the admin UI: list with key
prefixes and last use, disable and enable, add, revoke, rotate with an overlap window. Each
change needs the admin role and a reason code, is audited, and is in force at once."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from app.db import session_scope
from app.hotcache import API_KEY_STATES, ApiKeyStates, api_keys_changed, run_after_commit
from app.models import ApiKey, AuditEvent
from app.models._types import utcnow
from app.runtime import Runtime
from app.settings import Settings
from tests.support import listening, new_person, run_cli
from tests.test_admin_api import admin_token, bearer
from tests.ui.test_ui_pages import make_admin as make_ui_admin
from tests.ui.test_ui_pages import sign_in as ui_sign_in

PING = "/v1/verifications/ver_00000000000000000000000000000000"


async def works(http: httpx.AsyncClient, key: str) -> bool:
    """Whether ``key`` is accepted (a 404 for an unknown verification) or refused (401)."""
    status = (await http.get(PING, headers=bearer(key))).status_code
    assert status in (401, 404), status
    return status == 404


async def events(runtime: Runtime, action: str) -> list[AuditEvent]:
    async with session_scope(runtime.sessions) as session:
        found = await session.execute(select(AuditEvent).where(AuditEvent.action == action))
        return list(found.scalars())


async def key_row(runtime: Runtime, key_id: str) -> ApiKey:
    async with session_scope(runtime.sessions) as session:
        key = await session.get(ApiKey, key_id)
        assert key is not None
        return key


@pytest.fixture
async def boss(http: httpx.AsyncClient, runtime: Runtime) -> dict[str, str]:
    return bearer(await admin_token(http, runtime, "admin"))


@pytest.fixture
async def client_and_key(make_client: Any) -> tuple[str, str]:
    client_id, key = await make_client("test")
    return str(client_id), str(key)


async def only_key_id(http: httpx.AsyncClient, boss: dict[str, str], client_id: str) -> str:
    keys = (await http.get(f"/v1/admin/clients/{client_id}", headers=boss)).json()["keys"]
    assert len(keys) == 1
    return str(keys[0]["id"])


async def test_clients_are_listed_with_key_prefixes_and_last_use(
    http: httpx.AsyncClient, boss: dict[str, str], client_and_key: tuple[str, str]
) -> None:
    """The list shows each key's prefix, state and when it was last used, never the key."""
    client_id, key = client_and_key
    before = (await http.get("/v1/admin/clients", headers=boss)).json()
    used = await http.post("/v1/verifications", json=new_person(), headers=bearer(key))

    after = (await http.get("/v1/admin/clients", headers=boss)).json()

    assert used.status_code == 201
    assert before[0]["keys"][0]["last_used_at"] is None
    listed = after[0]["keys"][0]
    assert (after[0]["id"], listed["prefix"], listed["state"]) == (client_id, key[:12], "active")
    assert listed["last_used_at"] is not None
    assert key not in json.dumps(after)


async def test_disabling_a_client_stops_its_keys_at_once_and_enabling_restores_them(
    http: httpx.AsyncClient,
    runtime: Runtime,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
) -> None:
    """Disable refuses the client's key on the next request; enable lets it in again."""
    client_id, key = client_and_key
    assert await works(http, key)

    off = await http.post(
        f"/v1/admin/clients/{client_id}/disable", json={"reason_code": "abuse"}, headers=boss
    )
    refused = await works(http, key)
    on = await http.post(
        f"/v1/admin/clients/{client_id}/enable", json={"reason_code": "resolved"}, headers=boss
    )

    assert (off.status_code, off.json()["disabled"]) == (200, True)
    assert refused is False
    assert (on.status_code, on.json()["disabled"]) == (200, False)
    assert await works(http, key)
    [event] = await events(runtime, "client.disabled")
    assert (event.actor_type, event.subject_id) == ("admin", client_id)
    assert json.loads(event.data) == {"reason_code": "abuse"}


async def test_a_second_key_works_beside_the_first(
    http: httpx.AsyncClient, boss: dict[str, str], client_and_key: tuple[str, str]
) -> None:
    """An added key is shown once and works alongside the existing one."""
    client_id, key = client_and_key

    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys",
        json={"reason_code": "client_request"},
        headers=boss,
    )

    assert r.status_code == 201
    second = r.json()["api_key"]
    assert second.startswith("rn_test_")
    assert second != key
    assert await works(http, key)
    assert await works(http, second)
    listed = (await http.get(f"/v1/admin/clients/{client_id}", headers=boss)).json()
    assert len(listed["keys"]) == 2
    assert second not in json.dumps(listed)


async def test_a_revoked_key_is_refused_on_its_next_request(
    http: httpx.AsyncClient,
    runtime: Runtime,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
) -> None:
    """Revoking a key (with a reason code) refuses it at once, although it was just used."""
    client_id, key = client_and_key
    second = (
        await http.post(
            f"/v1/admin/clients/{client_id}/keys", json={"reason_code": "other"}, headers=boss
        )
    ).json()
    assert await works(http, key)

    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{second['id']}/revoke",
        json={"reason_code": "key_compromised"},
        headers=boss,
    )

    assert r.status_code == 200
    assert (r.json()["state"], r.json()["usable_keys_left"], r.json()["warning"]) == (
        "revoked",
        1,
        None,
    )
    assert await works(http, second["api_key"]) is False
    assert await works(http, key)
    [event] = await events(runtime, "api_key.revoked")
    assert event.subject_id == second["id"]
    assert json.loads(event.data)["reason_code"] == "key_compromised"


async def test_revoking_the_last_key_is_allowed_and_says_the_client_stops(
    http: httpx.AsyncClient, boss: dict[str, str], client_and_key: tuple[str, str]
) -> None:
    """The client's last key can be revoked; the answer warns that the client has stopped."""
    client_id, key = client_and_key
    key_id = await only_key_id(http, boss, client_id)

    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/revoke",
        json={"reason_code": "client_offboarded"},
        headers=boss,
    )

    assert r.json()["usable_keys_left"] == 0
    assert "last working key" in r.json()["warning"]
    assert await works(http, key) is False


async def test_a_rotated_key_works_during_the_overlap_beside_its_successor(
    http: httpx.AsyncClient,
    runtime: Runtime,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
) -> None:
    """Rotation hands out a new key; the old one keeps working until the overlap ends."""
    client_id, key = client_and_key
    key_id = await only_key_id(http, boss, client_id)
    assert await works(http, key)

    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate",
        json={"reason_code": "scheduled_rotation", "overlap_hours": 2},
        headers=boss,
    )

    assert r.status_code == 201
    previous, new = r.json()["previous"], r.json()["key"]
    assert previous["state"] == "expiring"
    ends = (await key_row(runtime, key_id)).expires_at
    assert ends is not None
    assert abs(ends - (utcnow() + timedelta(hours=2))) < timedelta(minutes=1)
    assert await works(http, key)
    assert await works(http, new["api_key"])


async def test_a_rotated_key_stops_once_its_overlap_has_passed(
    http: httpx.AsyncClient,
    runtime: Runtime,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
) -> None:
    """Once the overlap window has passed the old key is refused, with nobody acting."""
    client_id, key = client_and_key
    key_id = await only_key_id(http, boss, client_id)
    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate",
        json={"reason_code": "scheduled_rotation", "overlap_hours": 1},
        headers=boss,
    )
    assert await works(http, key)  # cached, if caching, with its expiry

    async with session_scope(runtime.sessions) as session:  # the hour has passed
        row = await session.get(ApiKey, key_id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    runtime.api_keys.clear()

    assert await works(http, key) is False
    assert await works(http, r.json()["key"]["api_key"])


async def test_rotation_with_no_overlap_stops_the_old_key_now(
    http: httpx.AsyncClient, boss: dict[str, str], client_and_key: tuple[str, str]
) -> None:
    """overlap_hours 0 makes the old key stop at once."""
    client_id, key = client_and_key
    key_id = await only_key_id(http, boss, client_id)

    r = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate",
        json={"reason_code": "key_compromised", "overlap_hours": 0},
        headers=boss,
    )

    assert await works(http, key) is False
    assert await works(http, r.json()["key"]["api_key"])


@pytest.mark.parametrize("role", ["reviewer", "auditor"])
async def test_roles_below_admin_may_list_but_not_change(
    http: httpx.AsyncClient, runtime: Runtime, client_and_key: tuple[str, str], role: str
) -> None:
    """Reviewers and auditors get 403 insufficient_role for every change."""
    client_id, key = client_and_key
    headers = bearer(await admin_token(http, runtime, role))
    listed = await http.get("/v1/admin/clients", headers=headers)
    key_id = listed.json()[0]["keys"][0]["id"]
    reason = {"reason_code": "other"}

    answers = [
        await http.post(f"/v1/admin/clients/{client_id}/disable", json=reason, headers=headers),
        await http.post(f"/v1/admin/clients/{client_id}/keys", json=reason, headers=headers),
        await http.post(
            f"/v1/admin/clients/{client_id}/keys/{key_id}/revoke", json=reason, headers=headers
        ),
        await http.post(
            f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate", json=reason, headers=headers
        ),
    ]

    assert listed.status_code == 200
    assert {(a.status_code, a.json()["code"]) for a in answers} == {(403, "insufficient_role")}
    assert await works(http, key)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "reason_required"),
        ({"reason_code": "because"}, "invalid_reason_code"),
        ({"reason_code": 7}, "invalid_reason_code"),
    ],
)
async def test_a_change_without_a_known_reason_code_is_422(
    http: httpx.AsyncClient,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
    body: dict[str, Any],
    code: str,
) -> None:
    """A missing or unknown reason code is refused (422), and nothing changes."""
    client_id, key = client_and_key

    r = await http.post(f"/v1/admin/clients/{client_id}/disable", json=body, headers=boss)

    assert (r.status_code, r.json()["code"]) == (422, code)
    assert await works(http, key)


async def test_unknown_clients_and_foreign_keys_are_404_and_a_revoked_key_is_409(
    http: httpx.AsyncClient,
    boss: dict[str, str],
    client_and_key: tuple[str, str],
    make_client: Any,
) -> None:
    """Ids that do not exist, or a key under another client, are 404; revoking twice is 409."""
    client_id, _ = client_and_key
    other_id, _ = await make_client("test", name="Other")
    key_id = await only_key_id(http, boss, client_id)
    reason = {"reason_code": "other"}

    unknown = await http.post("/v1/admin/clients/cli_nope/disable", json=reason, headers=boss)
    foreign = await http.post(
        f"/v1/admin/clients/{other_id}/keys/{key_id}/revoke", json=reason, headers=boss
    )
    first = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/revoke", json=reason, headers=boss
    )
    again = await http.post(
        f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate", json=reason, headers=boss
    )

    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert (foreign.status_code, foreign.json()["code"]) == (404, "not_found")
    assert first.status_code == 200
    assert (again.status_code, again.json()["code"]) == (409, "api_key_not_active")


async def test_cli_lists_revokes_rotates_and_disables_with_reason_codes(
    http: httpx.AsyncClient,
    runtime: Runtime,
    settings: Settings,
    client_and_key: tuple[str, str],
) -> None:
    """The CLI's client and key commands change the same state, audited as the operator."""
    client_id, key = client_and_key
    listed = json.loads(run_cli(settings, "clients", "list").stdout)
    key_id = listed[0]["keys"][0]["key_id"]

    added = run_cli(settings, "clients", "add-key", client_id, "--reason-code", "client_request")
    rotated = run_cli(
        settings, "clients", "rotate-key", key_id,
        "--reason-code", "scheduled_rotation", "--overlap-hours", "0",
    )  # fmt: skip
    new_key = json.loads(rotated.stdout)["key"]
    revoked = run_cli(
        settings, "clients", "revoke-key", new_key["key_id"], "--reason-code", "key_compromised"
    )
    disabled = run_cli(settings, "clients", "disable", client_id, "--reason-code", "abuse")
    bad = run_cli(settings, "clients", "revoke-key", new_key["key_id"], "--reason-code", "other")

    assert [p.returncode for p in (added, rotated, revoked, disabled)] == [0, 0, 0, 0]
    assert await works(http, key) is False
    assert await works(http, new_key["api_key"]) is False
    assert await works(http, json.loads(added.stdout)["api_key"]) is False  # client disabled
    assert json.loads(revoked.stdout)["usable_keys_left"] == 1
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "realname: This API key is already revoked or expired",
    )
    [event] = await events(runtime, "client.disabled")
    assert event.actor_type == "operator"
    assert (event.actor_id or "").startswith("os:")


async def test_cli_says_when_the_last_key_is_revoked(
    settings: Settings, runtime: Runtime, client_and_key: tuple[str, str]
) -> None:
    """Revoking the last key from the CLI succeeds with a warning that the client stopped."""
    listed = json.loads(run_cli(settings, "clients", "list").stdout)

    out = run_cli(
        settings, "clients", "revoke-key", listed[0]["keys"][0]["key_id"], "--reason-code", "other"
    )

    assert out.returncode == 0
    assert "last working key" in json.loads(out.stdout)["warning"]


async def test_admin_ui_revokes_a_key_and_rotates_another(
    http: httpx.AsyncClient, runtime: Runtime, client_and_key: tuple[str, str]
) -> None:
    """An admin revokes and rotates keys from the clients page, choosing a reason code."""
    client_id, key = client_and_key
    csrf = await ui_sign_in(http, await make_ui_admin(runtime, "admin"))
    page = await http.get("/admin/clients")
    added = await http.post(
        f"/admin/clients/{client_id}/keys", data={"csrf_token": csrf, "reason_code": "other"}
    )
    async with session_scope(runtime.sessions) as session:
        rows = list(
            (await session.execute(select(ApiKey).where(ApiKey.client_id == client_id))).scalars()
        )
    first = min(rows, key=lambda k: k.created_at)

    rotated = await http.post(
        f"/admin/clients/{client_id}/keys/{first.id}/rotate",
        data={"csrf_token": csrf, "reason_code": "scheduled_rotation", "overlap_hours": "0"},
    )
    revoked = await http.post(
        f"/admin/clients/{client_id}/keys/{max(rows, key=lambda k: k.created_at).id}/revoke",
        data={"csrf_token": csrf, "reason_code": "key_compromised"},
    )

    assert 'name="reason_code"' in page.text
    assert key[:12] in page.text
    assert added.status_code == 201
    assert 'id="new-key"' in added.text
    assert rotated.status_code == 201
    assert "keeps working for 0 h" in rotated.text
    assert revoked.status_code == 200
    assert "stopped working at once" in revoked.text
    assert await works(http, key) is False
    assert len(await events(runtime, "api_key.revoked")) == 1


async def test_admin_ui_hides_key_changes_from_reviewers_and_refuses_their_posts(
    http: httpx.AsyncClient, runtime: Runtime, client_and_key: tuple[str, str]
) -> None:
    """A reviewer sees no change forms, and a forged form post is 403 with nothing changed."""
    client_id, key = client_and_key
    csrf = await ui_sign_in(http, await make_ui_admin(runtime, "reviewer"))

    page = await http.get("/admin/clients")
    r = await http.post(
        f"/admin/clients/{client_id}/disable", data={"csrf_token": csrf, "reason_code": "abuse"}
    )

    assert page.status_code == 200
    assert 'name="reason_code"' not in page.text
    assert r.status_code == 403
    assert await works(http, key)


async def test_admin_ui_refuses_a_missing_reason_code(
    http: httpx.AsyncClient, runtime: Runtime, client_and_key: tuple[str, str]
) -> None:
    """A form without a reason code is answered 422 and the client stays enabled."""
    client_id, key = client_and_key
    csrf = await ui_sign_in(http, await make_ui_admin(runtime, "admin"))

    r = await http.post(f"/admin/clients/{client_id}/disable", data={"csrf_token": csrf})

    assert r.status_code == 422
    assert await works(http, key)


async def test_a_process_that_does_not_cache_keys_still_tells_those_that_do(
    runtime: Runtime,
) -> None:
    """With Redis, a change made where API keys are not cached (0 s) still drops the entries
    of the processes that do cache them; without Redis nobody caches."""
    prefix = f"{runtime.settings.redis_prefix}:nocache{uuid.uuid4().hex}"
    async with listening(runtime, prefix) as mine, listening(runtime, prefix) as theirs:
        caching = ApiKeyStates(mine, 30)
        not_caching = ApiKeyStates(theirs, 0)
        caching.put("hash", caching.epoch(), {"client": {}, "key_id": "key_1", "expires_at": None})
        before = caching.get("hash", caching.epoch())

        async with runtime.sessions() as session:
            session.info[API_KEY_STATES] = not_caching
            api_keys_changed(session)
            await run_after_commit(session)

        after = caching.get("hash", caching.epoch())
    if runtime.limits.redis is None:
        assert (before, after, caching.enabled) == (None, None, False)
    else:
        assert before is not None
        assert after is None
