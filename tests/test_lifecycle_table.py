"""The lifecycle as data: the decision after check results, and the README's copy of the table
of allowed moves (the table itself, and ``transition`` enforcing it, are checked in
``tests/test_state_machine.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.models import Check, Status
from app.services import lifecycle
from app.services.lifecycle import (
    MOVES,
    README_END,
    README_START,
    WAIT,
    Next,
    after_checks,
)
from app.settings import Settings
from tests.conftest import REPO_ROOT

POLICY = "2026-01"  # the shipped collection rules, kept across tests


def _checks(*rows: tuple[str, str, str | None, int]) -> list[Check]:
    return [
        Check(verification_id="ver_x", type=t, status=s, reason=r, attempts=a)
        for t, s, r, a in rows
    ]


@pytest.fixture
def rules(settings: Settings) -> Settings:
    return settings.model_copy(update={"check_max_attempts": 3, "check_retry_backoff_seconds": 2})


@pytest.mark.parametrize(
    ("status", "checks", "expected"),
    [
        # Automated checks passed: a code to prove next, or done.
        (Status.PENDING, [("id_registry", "passed", None, 1)], Next(Status.VERIFIED)),
        (
            Status.PENDING,
            [("id_registry", "passed", None, 1), ("sms_otp", "pending", None, 0)],
            Next(Status.AWAITING_CODE),
        ),
        (
            Status.AWAITING_CODE,
            [("id_registry", "passed", None, 1), ("sms_otp", "pending", None, 0)],
            WAIT,
        ),
        (
            Status.AWAITING_CODE,
            [("id_registry", "passed", None, 1), ("sms_otp", "passed", None, 2)],
            Next(Status.VERIFIED),
        ),
        (
            Status.AWAITING_CODE,
            [("id_registry", "passed", None, 1), ("sms_otp", "failed", "attempts_exhausted", 5)],
            Next(Status.LOCKED, "attempts_exhausted"),
        ),
        # A definite negative answer rejects, naming the check.
        (
            Status.PENDING,
            [("id_registry", "failed", "id_mismatch", 1), ("sms_otp", "pending", None, 0)],
            Next(Status.REJECTED, "id_mismatch", {"check": "id_registry"}),
        ),
        (
            Status.PENDING,
            [
                ("id_registry", "passed", None, 1),
                ("sms_otp", "pending", None, 0),
                ("carrier_3e", "failed", "phone_mismatch", 1),
            ],
            Next(Status.REJECTED, "phone_mismatch", {"check": "carrier_3e"}),
        ),
        # No answer: another run with back-off, then review.
        (
            Status.PENDING,
            [("id_registry", "unavailable", "registry_unavailable", 1)],
            Next(None, retry_in=2.0),
        ),
        (
            Status.PENDING,
            [("id_registry", "unavailable", "registry_unavailable", 2)],
            Next(None, retry_in=4.0),
        ),
        (
            Status.PENDING,
            [("id_registry", "unavailable", "registry_unavailable", 3)],
            Next(
                Status.NEEDS_REVIEW,
                "registry_unavailable",
                {"check": "id_registry", "attempts": 3},
            ),
        ),
        (
            Status.PENDING,
            [("id_registry", "unavailable", "registry_quota_exceeded", 1)],
            Next(
                Status.NEEDS_REVIEW,
                "registry_quota_exceeded",
                {"check": "id_registry", "attempts": 1},
            ),
        ),
        # Nothing ran yet.
        (Status.PENDING, [("id_registry", "pending", None, 0)], WAIT),
        # A reviewer settled the registry checks: the code still to prove, or done.
        (
            Status.NEEDS_REVIEW,
            [("id_registry", "passed", "manual_review", 3), ("sms_otp", "pending", None, 0)],
            Next(Status.AWAITING_CODE),
        ),
        (
            Status.NEEDS_REVIEW,
            [("id_registry", "passed", "manual_review", 3)],
            Next(Status.VERIFIED),
        ),
        # Still no answer while in review is no move.
        (
            Status.NEEDS_REVIEW,
            [("id_registry", "unavailable", "registry_unavailable", 3)],
            WAIT,
        ),
    ],
)
def test_what_comes_after_the_check_results(
    rules: Settings,
    status: Status,
    checks: list[tuple[str, str, str | None, int]],
    expected: Next,
) -> None:
    """The decision after check results, for each kind of result."""
    no_retry = {"registry_quota_exceeded"}
    assert after_checks(status, _checks(*checks), rules, no_retry=no_retry) == expected


#: Results a pending verification's checks can hold: its code check is not answered before
#: the code is sent (on leaving ``pending``).
PENDING_RESULTS = st.lists(
    st.tuples(
        st.sampled_from(["id_registry", "carrier_3e", "network_identity"]),
        st.sampled_from(["pending", "passed", "failed", "unavailable"]),
        st.sampled_from([None, "id_mismatch", "registry_unavailable"]),
        st.integers(0, 5),
    )
    | st.just(("sms_otp", "pending", None, 0)),
    max_size=4,
    unique_by=lambda row: row[0],
)


@given(PENDING_RESULTS)
def test_any_results_of_a_pending_verification_lead_to_a_move_of_the_table(
    settings: Settings, checks: list[tuple[str, str, str | None, int]]
) -> None:
    """Whatever the automated checks answered, what comes after ``pending`` is waiting or a
    move that the table allows."""
    decision = after_checks(Status.PENDING, _checks(*checks), settings)
    assert decision.status is None or decision.status in MOVES[Status.PENDING]


def test_the_readme_shows_the_table_of_the_code() -> None:
    """The README's lifecycle block is the one generated from the table (regenerate it with
    ``python -m app.services.lifecycle README.md``)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    assert readme[start:end] == lifecycle.readme_block()


def test_the_module_prints_and_rewrites_the_readme_block(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m app.services.lifecycle`` prints the block; given a file, it rewrites the
    block there and leaves the rest."""
    assert lifecycle.main([]) == 0
    assert capsys.readouterr().out == lifecycle.readme_block() + "\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nstale\n{README_END}\n\nTail\n", "utf-8")
    assert lifecycle.main([str(readme)]) == 0
    assert readme.read_text("utf-8") == f"# Title\n\n{lifecycle.readme_block()}\n\nTail\n"
