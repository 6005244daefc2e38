"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app import metrics
from app.db import session_scope
from app.deps import RuntimeDep
from app.services.review import counts_by_status

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The process can serve: the database answers")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    try:
        async with asyncio.timeout(2), runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get(
    "/metrics", summary="Prometheus metrics (no personal data in labels)", include_in_schema=False
)
async def prometheus_metrics(runtime: RuntimeDep, request: Request) -> Response:
    token = runtime.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(sent, token.get_secret_value().encode()):
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})

    try:
        async with session_scope(runtime.sessions) as session:
            for status, count in (await counts_by_status(session)).items():
                metrics.VERIFICATIONS.labels(status).set(count)
    except Exception as exc:  # metrics must still answer when the database does not
        logger.warning("metrics: database unavailable", extra={"error_type": type(exc).__name__})
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
