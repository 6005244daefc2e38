"""The verification lifecycle through the checks: registry outcomes, SMS codes, locks, limits."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlmodel import col

from app.crypto import seal
from app.identity.subject import SUBJECT_SEAL
from app.models import OutboxJob, SandboxMessage, SmsCode, Verification
from app.models._types import utcnow
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_intake import GOOD


async def start(
    http: httpx.AsyncClient, key: str, worker: Worker, **changes: Any
) -> dict[str, Any]:
    """Create a verification and let the worker run its checks."""
    r = await http.post("/v1/verifications", json={**GOOD, **changes}, headers=auth(key))
    assert r.status_code == 201, r.text
    await worker.run_until_idle()
    got = await http.get(f"/v1/verifications/{r.json()['id']}", headers=auth(key))
    return dict(got.json())


async def inbox_code(http: httpx.AsyncClient, key: str, verification_id: str) -> str:
    r = await http.get(
        "/v1/sandbox/messages", params={"verification_id": verification_id}, headers=auth(key)
    )
    assert r.status_code == 200, r.text
    body: str = r.json()["data"][0]["body"]
    return next(tok for tok in body.replace(",", " ").split() if tok.isdigit() and len(tok) == 6)


async def submit(
    http: httpx.AsyncClient, key: str, verification_id: str, code: Any
) -> httpx.Response:
    return await http.post(
        f"/v1/verifications/{verification_id}/sms-code", json={"code": code}, headers=auth(key)
    )


@pytest.fixture
async def l2_key(make_client: Any) -> str:
    _, key = await make_client("test", level="L2")
    return str(key)


async def test_l1_match_is_verified(http: httpx.AsyncClient, api_key: str, worker: Worker) -> None:
    """An ordinary identity at L1 with a test key passes the mock registry and is verified."""
    v = await start(http, api_key, worker)
    assert v["status"] == "verified"
    assert v["checks"] == [{"type": "id_registry", "status": "passed", "reason": None}]


async def test_l2_flow_reaches_verified_with_the_inbox_code(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """L2: the registry passes, a code lands in the sandbox inbox, submitting it verifies."""
    v = await start(http, l2_key, worker)
    assert v["status"] == "awaiting_code"
    assert v["next_action"]["type"] == "submit_sms_code"
    code = await inbox_code(http, l2_key, v["id"])
    r = await submit(http, l2_key, v["id"], code)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verified"
    assert [c["status"] for c in r.json()["checks"]] == ["passed", "passed"]


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("不一致", "rejected", "id_mismatch"),
        ("查无此人", "rejected", "id_not_found"),
        ("信息有误", "rejected", "invalid_identity"),
        ("服务异常", "needs_review", "registry_unavailable"),
        ("系统维护", "needs_review", "registry_maintenance"),
        ("超出限额", "needs_review", "registry_quota_exceeded"),
    ],
)
async def test_magic_names_give_their_documented_outcome(
    http: httpx.AsyncClient, api_key: str, worker: Worker, name: str, status: str, reason: str
) -> None:
    """Each magic name of the mock registry gives the status and reason the README documents."""
    v = await start(http, api_key, worker, real_name=name)
    assert (v["status"], v["status_reason"]) == (status, reason)
    assert v["checks"][0]["reason"] == reason


async def test_unavailable_registry_is_retried_before_review(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An unavailable registry is tried check_max_attempts times, then needs_review."""
    v = await start(http, api_key, worker, real_name="服务异常")
    async with runtime.engine.connect() as conn:
        attempts = (
            await conn.execute(
                text("SELECT attempts FROM checks WHERE verification_id = :v"), {"v": v["id"]}
            )
        ).scalar()
    assert attempts == runtime.settings.check_max_attempts
    assert v["status"] == "needs_review"


async def test_quota_exceeded_goes_to_review_without_retry(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A daily-limit answer is not retried: retrying today cannot help."""
    v = await start(http, api_key, worker, real_name="超出限额")
    async with runtime.engine.connect() as conn:
        attempts = (
            await conn.execute(
                text("SELECT attempts FROM checks WHERE verification_id = :v"), {"v": v["id"]}
            )
        ).scalar()
    assert attempts == 1


async def test_l3_phone_mismatch_is_rejected(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """At L3 the carrier check rejects a phone that does not belong to the person."""
    v = await start(http, api_key, worker, real_name="号码不符", level="L3")
    assert (v["status"], v["status_reason"]) == ("rejected", "phone_mismatch")
    assert [c["status"] for c in v["checks"]] == ["passed", "pending", "failed"]


async def test_l3_flow_runs_carrier_then_code(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """At L3 both automated checks pass before a code is sent."""
    v = await start(http, api_key, worker, level="L3")
    assert v["status"] == "awaiting_code"
    assert {c["type"]: c["status"] for c in v["checks"]} == {
        "id_registry": "passed",
        "sms_otp": "pending",
        "carrier_3e": "passed",
    }


async def test_wrong_code_says_attempts_left(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """A wrong code is code_incorrect with the attempts remaining."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await submit(http, l2_key, v["id"], wrong)
    assert r.status_code == 422
    assert (r.json()["code"], r.json()["attempts_remaining"]) == ("code_incorrect", 4)
    assert code not in r.text


async def test_a_right_code_clears_the_persons_failed_codes(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Failed codes count against the person until a right code: then none are left."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(2):
        assert (await submit(http, l2_key, v["id"], wrong)).status_code == 422
    got = (await http.get(f"/v1/verifications/{v['id']}", headers=auth(l2_key))).json()
    async with runtime.sessions() as session:
        verification = await session.get(Verification, got["id"])
    assert verification is not None
    person = (verification.client_id, verification.identity_id or verification.id)
    assert await runtime.limits.failed_codes_of(*person) == 2
    assert (await submit(http, l2_key, v["id"], code)).status_code == 200
    assert await runtime.limits.failed_codes_of(*person) == 0


async def test_five_wrong_codes_lock_the_verification(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """The fifth wrong code locks the verification; the right code no longer helps."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    codes = [(await submit(http, l2_key, v["id"], wrong)).json()["code"] for _ in range(5)]
    assert codes == ["code_incorrect"] * 4 + ["attempts_exhausted"]
    after = await submit(http, l2_key, v["id"], code)
    assert after.json()["code"] == "attempts_exhausted"
    got = (await http.get(f"/v1/verifications/{v['id']}", headers=auth(l2_key))).json()
    assert (got["status"], got["status_reason"]) == ("locked", "attempts_exhausted")


@pytest.mark.parametrize(
    "bad", [" 123456", "１２３４５６", "١٢٣٤٥٦", "12345", "1234567", "12 3456", "+12345", "12345a"]
)
async def test_only_six_ascii_digits_are_a_code(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, bad: str
) -> None:
    """Spaces, full-width or foreign digits and wrong lengths are refused, not counted."""
    v = await start(http, l2_key, worker)
    r = await submit(http, l2_key, v["id"], bad)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_code_format"
    code = await inbox_code(http, l2_key, v["id"])
    assert (await submit(http, l2_key, v["id"], code)).json()["status"] == "verified"


async def test_a_number_is_not_a_code(http: httpx.AsyncClient, l2_key: str, worker: Worker) -> None:
    """A JSON number is refused: codes are strings (leading zeros matter)."""
    v = await start(http, l2_key, worker)
    r = await submit(http, l2_key, v["id"], 123456)
    assert r.status_code == 422


async def test_right_code_raced_twenty_times_succeeds_once(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Twenty concurrent submissions of the right code: exactly one succeeds."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    answers = await asyncio.gather(*(submit(http, l2_key, v["id"], code) for _ in range(20)))
    assert sum(r.status_code == 200 for r in answers) == 1
    assert all(r.status_code in {200, 409, 422} for r in answers), [r.text for r in answers]
    async with runtime.engine.connect() as conn:
        events = (
            await conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'verification.verified'")
            )
        ).scalar()
    assert events == 1


async def test_expired_code_is_refused(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A code past its five minutes is code_expired, even when right."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    async with runtime.sessions() as session, session.begin():
        await session.execute(update(SmsCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = await submit(http, l2_key, v["id"], code)
    assert r.json()["code"] == "code_expired"


async def test_resend_inside_a_minute_is_429(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """The per-phone limit (1/minute) refuses a resend right after the first code."""
    v = await start(http, l2_key, worker)
    r = await http.post(f"/v1/verifications/{v['id']}/sms-code/resend", headers=auth(l2_key))
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60


async def test_refused_resend_never_reaches_the_sender(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A refused resend queues nothing: the inbox still holds one message."""
    v = await start(http, l2_key, worker)
    await http.post(f"/v1/verifications/{v['id']}/sms-code/resend", headers=auth(l2_key))
    await worker.run_until_idle()
    r = await http.get(
        "/v1/sandbox/messages", params={"verification_id": v["id"]}, headers=auth(l2_key)
    )
    assert len(r.json()["data"]) == 1


async def test_resend_after_the_window_supersedes_the_old_code(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """After the limit window, a resend sends a new code and the old one stops working."""
    v = await start(http, l2_key, worker)
    old = await inbox_code(http, l2_key, v["id"])
    await runtime.limits.reset()
    r = await http.post(f"/v1/verifications/{v['id']}/sms-code/resend", headers=auth(l2_key))
    assert r.status_code == 202, r.text
    await worker.run_until_idle()
    new = await inbox_code(http, l2_key, v["id"])
    if new != old:
        assert (await submit(http, l2_key, v["id"], old)).json()["code"] == "code_incorrect"
    assert (await submit(http, l2_key, v["id"], new)).json()["status"] == "verified"


async def test_sandbox_inbox_is_closed_to_live_keys(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """Live keys get 403 sandbox_only from the sandbox inbox."""
    _, live = await make_client("live", level="L1")
    r = await http.get(
        "/v1/sandbox/messages", params={"verification_id": "ver_x"}, headers=auth(live)
    )
    assert r.status_code == 403
    assert r.json()["code"] == "sandbox_only"


async def test_sandbox_inbox_shows_only_own_verifications(
    http: httpx.AsyncClient, l2_key: str, make_client: Any, worker: Worker
) -> None:
    """Another client's verification id is a 404 in the inbox too."""
    v = await start(http, l2_key, worker)
    _, other = await make_client("test", level="L2", name="Other")
    r = await http.get(
        "/v1/sandbox/messages", params={"verification_id": v["id"]}, headers=auth(other)
    )
    assert r.status_code == 404


async def test_live_key_with_registry_down_ends_in_review(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """A live client whose HTTP registry is unreachable ends in needs_review, never verified."""
    _, live = await make_client("live", level="L1")
    v = await start(http, live, worker)
    assert v["status"] == "needs_review"
    assert v["checks"][0]["status"] == "unavailable"


@pytest.mark.usefixtures("queued_checks")
async def test_lost_worker_lease_sends_the_message_once(
    http: httpx.AsyncClient, l2_key: str, runtime: Runtime, worker: Worker
) -> None:
    """A worker that sent and died before marking the job done: the retry does not send twice."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(l2_key))
    vid = r.json()["id"]
    assert await worker.run_one()  # runs the checks: queues the send
    job = await worker.claim()
    assert job is not None
    assert job.kind == "send_sms"
    # The crash: the send happened, the job was never finished.
    from app.senders.base import OutgoingSms
    from app.services import codes

    payload = codes.open_payload(runtime, job)
    await runtime.senders.sandbox.send(
        OutgoingSms(job.id, payload["phone"], "verification_code", {}, f"code {payload['code']}")
    )
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(OutboxJob)
            .where(col(OutboxJob.id) == job.id)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    await worker.run_until_idle()
    async with runtime.engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT count(*) FROM sandbox_messages WHERE verification_id = :v"), {"v": vid}
            )
        ).scalar()
        pending = (
            await conn.execute(text("SELECT count(*) FROM outbox_jobs WHERE done_at IS NULL"))
        ).scalar()
    assert count == 1
    assert pending == 0


@pytest.mark.usefixtures("queued_checks")
async def test_crash_after_commit_loses_no_check(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """A verification committed without any worker running is picked up by a later worker."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert r.json()["status"] == "pending"
    await Worker(runtime).run_until_idle()  # "after the restart"
    got = await http.get(f"/v1/verifications/{r.json()['id']}", headers=auth(api_key))
    assert got.json()["status"] == "verified"


async def test_done_jobs_keep_no_sealed_payload(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """After sending, the sealed phone/code payload is wiped from the outbox."""
    await start(http, l2_key, worker)
    async with runtime.engine.connect() as conn:
        left = (
            await conn.execute(text("SELECT count(*) FROM outbox_jobs WHERE payload IS NOT NULL"))
        ).scalar()
    assert left == 0


async def test_terminal_states_wipe_the_sealed_subject(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Once verified, the verification keeps no sealed copy of the identity fields."""
    v = await start(http, l2_key, worker)
    await submit(http, l2_key, v["id"], await inbox_code(http, l2_key, v["id"]))
    async with runtime.engine.connect() as conn:
        sealed = (
            await conn.execute(
                text("SELECT sealed_subject FROM verifications WHERE id = :v"), {"v": v["id"]}
            )
        ).scalar()
    assert sealed is None


async def test_sandbox_messages_expire_within_an_hour(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Inbox messages carry an expiry of at most an hour and vanish after it."""
    v = await start(http, l2_key, worker)
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(SandboxMessage).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = await http.get(
        "/v1/sandbox/messages", params={"verification_id": v["id"]}, headers=auth(l2_key)
    )
    assert r.json()["data"] == []


async def test_client_quota_is_enforced(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime
) -> None:
    """A client over its per-minute quota gets 429 with Retry-After."""
    from app.models import Client

    cid, key = await make_client("test", level="L1")
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(Client).where(col(Client.id) == cid).values(request_quota_per_minute=3)
        )
    statuses = [
        (await http.get("/v1/verifications/ver_none", headers=auth(key))).status_code
        for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]


async def test_test_keys_cannot_use_up_a_live_phone_quota(runtime: Runtime) -> None:
    """SMS counted for test-mode keys live in their own namespace: live sends are unaffected."""
    phone = runtime.blind.compute("phone", "+8613800138000")
    assert await runtime.limits.hit_sms("test", "cli_a", phone) is None
    assert await runtime.limits.check_sms("test", "cli_a", phone) is not None
    assert await runtime.limits.check_sms("live", "cli_a", phone) is None


async def test_failed_codes_at_one_client_do_not_lock_another(runtime: Runtime) -> None:
    """The per-person failed-code budget is per client: client A's failures leave B alone."""
    for _ in range(runtime.settings.failed_codes_per_identity):
        await runtime.limits.record_failed_code("cli_a", "idn_1")
    budget = runtime.limits.failed_codes.amount
    assert await runtime.limits.failed_codes_of("cli_a", "idn_1") == budget
    assert await runtime.limits.failed_codes_of("cli_b", "idn_1") == 0


@pytest.mark.usefixtures("queued_checks")
async def test_no_sms_goes_out_for_a_verification_that_moved_on(
    http: httpx.AsyncClient, l2_key: str, runtime: Runtime, worker: Worker
) -> None:
    """A queued code is not sent once the verification has been erased."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(l2_key))
    assert await worker.run_one()  # checks run; the send is queued
    await http.delete(f"/v1/verifications/{r.json()['id']}", headers=auth(l2_key))
    await worker.run_until_idle()
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM sandbox_messages"))).scalar() == 0


async def test_the_worker_expires_abandoned_verifications(
    http: httpx.AsyncClient, l2_key: str, runtime: Runtime, worker: Worker
) -> None:
    """An awaiting_code verification past its expiry is expired by the worker and frees the
    person for another user."""
    from app.models import Verification

    v = await start(http, l2_key, worker)
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(Verification).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await worker.sweep() == 1
    got = (await http.get(f"/v1/verifications/{v['id']}", headers=auth(l2_key))).json()
    assert got["status"] == "expired"
    await runtime.limits.reset()
    other = await http.post(
        "/v1/verifications", json={**GOOD, "external_user_id": "other"}, headers=auth(l2_key)
    )
    assert other.status_code == 201, other.text


async def test_a_subject_sealed_in_the_version_1_format_still_runs(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A verification whose subject was sealed before the format was versioned (a positional
    list) still runs its checks and gets its code to the phone."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(l2_key))
    vid = r.json()["id"]
    v1 = json.dumps(["张三", "11010519491231002X", "+8613800138000"], ensure_ascii=False)
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(Verification)
            .where(col(Verification.id) == vid)
            .values(
                sealed_subject=seal(runtime.master_key, SUBJECT_SEAL, v1.encode(), vid.encode())
            )
        )
    await worker.run_until_idle()
    messages = await http.get(
        "/v1/sandbox/messages", params={"verification_id": vid}, headers=auth(l2_key)
    )
    assert [m["to"] for m in messages.json()["data"]] == ["138****8000"]
    r = await submit(http, l2_key, vid, await inbox_code(http, l2_key, vid))
    assert r.json()["status"] == "verified"
