"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.admin import api as admin_api
from app.admin import pages as admin_pages
from app.errors import document_problems, install_error_handlers
from app.logging import configure_logging
from app.middleware import ServiceMiddleware
from app.openapi import complete_openapi
from app.routers import (
    codes,
    discovery,
    docs,
    events,
    health,
    policies,
    sandbox,
    tokens,
    verifications,
)
from app.runtime import Runtime, build_runtime
from app.settings import ServeRole, Settings, get_settings
from app.worker import Worker

#: The API document's sections, in the order an integrator meets them.
OPENAPI_TAGS: list[dict[str, str]] = [
    {"name": "health", "description": "Liveness and readiness probes"},
    {"name": "policies", "description": "The published collection rules a person consents to"},
    {"name": "verifications", "description": "Verify an end user's real-name identity"},
    {"name": "sms codes", "description": "The one-time code that proves the phone (L2, L3)"},
    {"name": "sandbox", "description": "Test mode: the messages the sandbox sender delivered"},
    {"name": "tokens", "description": "Service tokens: issue, introspect (RFC 7662), revoke"},
    {"name": "events", "description": "Events, and the endpoints that receive them as webhooks"},
    {"name": "webhooks", "description": "What the service sends to those endpoints, signed"},
    {"name": "admin", "description": "Reviewers, auditors and admins"},
]


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    role: ServeRole | None = None,
) -> FastAPI:
    """Build the app. Pass ``runtime`` to share one (tests); otherwise it is built at start-up.

    ``role`` (default: ``settings.serve_role``) says what it answers: ``all``, the whole API;
    ``tokens``, the token path only (introspection, revocation, the JWKS and discovery
    documents, health and metrics), every other path 404. A ``tokens`` process never runs the
    in-process worker and hashes nothing (its runtime keeps no argon2 pool's worth of threads);
    it subscribes to cache invalidations like any other API process.
    """
    settings = runtime.settings if runtime is not None else (settings or get_settings())
    role = role or settings.serve_role
    if runtime is None and settings.serve_role != role:
        settings = settings.model_copy(update={"serve_role": role})  # the runtime's hashers
    if runtime is None:
        # `serve --workers N` builds the app in each worker process: configure logging there.
        configure_logging(settings.log_level, json_lines=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = app.state.runtime = runtime or build_runtime(settings)
        rt.start()
        if owned:
            # What start-up built lives as long as the process: kept out of the collector's
            # sweeps, a full collection under load walks only what requests made since.
            gc.freeze()
        worker_task = None
        if owned and role == "all" and rt.settings.run_worker:
            rt.worker = worker = Worker(rt)
            worker_task = asyncio.create_task(worker.run_forever(), name="outbox-worker")
        try:
            yield
        finally:
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
            if owned:
                await rt.close()

    app = FastAPI(
        title="realname",
        summary="Real-name identity verification (PRC Cybersecurity Law Art. 24)",
        version="0.1.0",
        lifespan=lifespan,
        # Served offline by app.routers.docs instead of from a CDN.
        docs_url=None,
        redoc_url=None,
        # A token-path process documents nothing: the whole API's processes serve the document.
        openapi_url="/openapi.json" if role == "all" else None,
        # The document's order (routes are matched in another: the hottest first).
        openapi_tags=OPENAPI_TAGS,
    )
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(
        ServiceMiddleware, max_body_bytes=settings.max_body_bytes, form_paths=tokens.FORM_PATHS
    )
    if role == "tokens":
        # Routes are matched in order: the token path first, as this process answers little else.
        app.include_router(tokens.router)
        app.include_router(health.router)
        app.include_router(discovery.router)
        return app
    # Routes are matched in order, each a regular expression: the code check and the token
    # issue, the busiest integrator routes after introspection, go first.
    app.include_router(codes.router)
    app.include_router(tokens.issuance)
    app.include_router(health.router)
    app.include_router(policies.router)
    app.include_router(verifications.router)
    app.include_router(sandbox.router)
    app.include_router(tokens.router)
    app.include_router(events.router)
    events.document_webhooks(app)
    app.include_router(discovery.router)
    app.include_router(docs.router)
    app.include_router(admin_api.router)
    app.include_router(admin_pages.router)
    document_problems(app)
    complete_openapi(app)
    return app
