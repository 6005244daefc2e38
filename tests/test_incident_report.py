"""`realname incident report`: the draft notification after an incident."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from app.models._types import utcnow
from app.runtime import Runtime
from app.worker import Worker
from tests.support import run_cli
from tests.test_admin_api import admin_token
from tests.test_emergency import act
from tests.test_intake import GOOD
from tests.test_tokens import token_for, verified


def _report(runtime: Runtime, out: Path, *args: str) -> dict[str, Any]:
    done = run_cli(runtime.settings, "incident", "report", "--output-dir", str(out), *args)
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    report: dict[str, Any] = json.loads(Path(paths["json"]).read_text())
    report["_markdown"] = Path(paths["markdown"]).read_text()
    return report


async def test_report_counts_what_was_affected_and_what_was_done(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, worker: Worker, tmp_path: Path
) -> None:
    """Counts per client, the emergency actions with their audit seqs, a verified chain."""
    cid, key = await make_client("test", level="L1")
    v = await verified(http, key, worker)
    await token_for(http, key, v["id"])
    admin = await admin_token(http, runtime, "admin")
    suspended = (await act(http, admin, "suspend-issuance", reason_code="drill")).json()
    revoked = (await act(http, admin, "revoke-tokens", reason_code="drill")).json()
    since = (utcnow() - timedelta(hours=1)).isoformat()
    report = _report(runtime, tmp_path, "--since", since)
    (row,) = report["affected"]
    assert (row["client_id"], row["verifications"], row["people"]) == (cid, 1, 1)
    assert (row["tokens_issued"], row["tokens_revoked"]) == (1, 1)
    assert [(a["audit_seq"], a["action"]) for a in report["emergency_actions"]] == [
        (suspended["audit_seq"], "suspend-issuance"),
        (revoked["audit_seq"], "revoke-tokens"),
    ]
    assert report["audit_chain"]["ok"] is True
    assert report["audit_chain"]["checkpoint"]["signature"]
    assert "## Facts to complete" in report["_markdown"]
    assert f"| {revoked['audit_seq']} |" in report["_markdown"]


async def test_report_holds_no_personal_data(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker, tmp_path: Path
) -> None:
    """Neither the values nor their masks appear in the report."""
    v = await verified(http, api_key, worker)
    report = _report(runtime, tmp_path, "--since", (utcnow() - timedelta(hours=1)).isoformat())
    text = json.dumps(report, ensure_ascii=False)
    for value in (GOOD["real_name"], GOOD["id_number"], GOOD["phone"], v["masked"]["id_number"]):
        assert value not in text


async def test_report_window_excludes_earlier_activity(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker, tmp_path: Path
) -> None:
    """Activity before --since is not counted."""
    await verified(http, api_key, worker)
    since, until = utcnow() + timedelta(seconds=1), utcnow() + timedelta(hours=1)
    report = _report(runtime, tmp_path, "--since", since.isoformat(), "--until", until.isoformat())
    assert report["affected"] == []


def test_report_refuses_a_window_that_ends_before_it_starts(
    runtime: Runtime, tmp_path: Path
) -> None:
    """--until before --since exits 2."""
    done = run_cli(
        runtime.settings,
        "incident",
        "report",
        "--since",
        "2026-02-01T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
        "--output-dir",
        str(tmp_path),
    )
    assert done.returncode == 2
