"""Prometheus metrics. Labels are route templates, status codes, verifier names, outcomes,
reason codes and (for cost) client ids only: never a verification id, a phone, a name or anything
else that identifies a person.

Each API process exposes its own counters at ``/metrics`` (scrape every process, or run one
worker per container); the ``verifications`` gauge is read from the database at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "realname_http_requests_total",
    "HTTP requests",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "realname_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TRANSITIONS = Counter(
    "realname_verification_transitions_total",
    "Verification state changes",
    ["to"],
    registry=REGISTRY,
)
CHECKS = Counter(
    "realname_checks_total",
    "Checks run, by verifier and outcome",
    ["check", "verifier", "outcome", "reason"],
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "realname_cache_lookups_total",
    "Hot-path cache lookups (app/hotcache.py): api_key, token_claims, token_state",
    ["cache", "result"],
    registry=REGISTRY,
)
INVALIDATION_SUBSCRIBED = Gauge(
    "realname_cache_invalidation_subscribed",
    "1 while this process hears pushed cache invalidations (and may answer from its caches)",
    registry=REGISTRY,
)
INVALIDATION_SUBSCRIPTIONS = Counter(
    "realname_cache_invalidation_subscriptions_total",
    "Confirmed (re)subscriptions to the cache-invalidation channel (each drops every entry)",
    registry=REGISTRY,
)
BILLABLE_CALLS = Counter(
    "realname_billable_calls_total",
    "Provider calls the provider bills, by provider action (verifier or sender name) and client",
    ["provider", "client"],
    registry=REGISTRY,
)
ESTIMATED_COST = Counter(
    "realname_estimated_cost_yuan_total",
    "Estimated provider cost in yuan (REALNAME_PROVIDER_PRICES), by provider action and client",
    ["provider", "client"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "realname_verifier_failovers_total",
    "Checks passed on to the next verifier of a chain, by the verifier that was unavailable",
    ["check", "verifier", "reason"],
    registry=REGISTRY,
)
SMS_SENDS = Counter(
    "realname_sms_sends_total", "SMS send attempts", ["sender", "result"], registry=REGISTRY
)
WEBHOOK_ATTEMPTS = Counter(
    "realname_webhook_attempts_total",
    "Webhook delivery attempts by outcome (ok or an error code)",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "realname_rate_limit_refusals_total",
    "Requests refused by a rate limit",
    ["limit"],
    registry=REGISTRY,
)
ADMISSION_REFUSALS = Counter(
    "realname_admission_refusals_total",
    "Requests refused at once (503 overloaded) because this process had its most in flight",
    ["gate"],
    registry=REGISTRY,
)
ADMISSION_IN_FLIGHT = Gauge(
    "realname_admission_in_flight",
    "Requests of a gate in flight in this process (REALNAME_REGISTRATION_MAX_IN_FLIGHT caps it)",
    ["gate"],
    registry=REGISTRY,
)
BULK_ACCESS_BLOCKED = Counter(
    "realname_admin_bulk_access_blocked_total",
    "Admins stopped by the bulk-access guard, by what they were about to be shown",
    ["what"],
    registry=REGISTRY,
)
VERIFICATIONS = Gauge(
    "realname_verifications",
    "Verifications by status (read at scrape time)",
    ["status"],
    registry=REGISTRY,
)
