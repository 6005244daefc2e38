"""The admin pages under ``/admin/``: plain HTML forms over the same services as the JSON API.

``web`` holds the plumbing (templates, the per-request transaction, cookies, CSRF, security
headers, error pages); ``core`` the sign-in, queue, verifications, clients and audit pages;
``webhooks`` and ``incidents`` the webhook, emergency and export pages.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.admin.pages import core, incidents, webhooks

router = APIRouter()
router.include_router(webhooks.router)
router.include_router(incidents.router)
router.include_router(core.router)  # last: its catch-all answers every unknown /admin path
