"""Tables, one per module. Importing this package registers them all on ``SQLModel.metadata``."""

from app.models.admin import Admin
from app.models.admin_session import AdminSession
from app.models.api_key import ApiKey
from app.models.audit_event import AuditEvent
from app.models.audit_head import AuditHead
from app.models.check import Check
from app.models.client import Client
from app.models.client_identity import ClientIdentity
from app.models.emergency_measure import EmergencyMeasure
from app.models.event import Event
from app.models.idempotency_key import IdempotencyKey
from app.models.identity import Identity
from app.models.outbox_job import OutboxJob
from app.models.policy import Policy
from app.models.sandbox_message import SandboxMessage
from app.models.service_token import ServiceToken
from app.models.signing_key import SigningKey
from app.models.sms_code import SmsCode
from app.models.verification import LIVE_STATUSES, Status, Verification
from app.models.webhook_attempt import WebhookAttempt
from app.models.webhook_delivery import WebhookDelivery
from app.models.webhook_endpoint import WebhookEndpoint

__all__ = [
    "LIVE_STATUSES",
    "Admin",
    "AdminSession",
    "ApiKey",
    "AuditEvent",
    "AuditHead",
    "Check",
    "Client",
    "ClientIdentity",
    "EmergencyMeasure",
    "Event",
    "IdempotencyKey",
    "Identity",
    "OutboxJob",
    "Policy",
    "SandboxMessage",
    "ServiceToken",
    "SigningKey",
    "SmsCode",
    "Status",
    "Verification",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
