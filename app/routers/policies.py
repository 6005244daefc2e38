"""Published collection rules (consent). Public: people must be able to read what they accept."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import SessionDep
from app.errors import ProblemError, problems
from app.schemas.policy import PolicyOut
from app.services import policies

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.get(
    "/current",
    response_model=PolicyOut,
    summary="The current collection rules",
    responses=problems("not_found"),
)
async def current_policy(session: SessionDep) -> PolicyOut:
    policy = await policies.current(session)
    if policy is None:
        raise ProblemError("not_found", "No collection rules are published")
    return PolicyOut.model_validate(policy, from_attributes=True)


@router.get(
    "/{version}",
    response_model=PolicyOut,
    summary="One published version of the collection rules",
    responses=problems("not_found"),
)
async def policy_version(version: str, session: SessionDep) -> PolicyOut:
    policy = await policies.get(session, version)
    if policy is None:
        raise ProblemError("not_found", "No such collection-rules version")
    return PolicyOut.model_validate(policy, from_attributes=True)
