"""The admin JSON API under ``/v1/admin``.

Every route needs an admin session (``POST /v1/admin/sessions``); integrator keys get 403 and
anonymous calls 401. ``core``: sign-in, review, decisions, search, audit trail, emergency
measures; ``clients``: clients and their API keys; ``webhooks``: endpoints, deliveries,
redelivery.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.admin.api import clients, core, webhooks

router = APIRouter()
router.include_router(core.router)
router.include_router(webhooks.router)
router.include_router(clients.router)
