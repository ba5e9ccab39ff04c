"""`POST /stripe/webhook`: Stripe's events, verified on the raw body and applied once.

A bad or stale signature gets 400 and nothing is applied. An event we could not apply (database
down) gets a 5xx so Stripe sends it again; a repeat of an applied one is answered 200 at once.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.errors import Contention, ServiceUnavailable
from domain.payments.gateway import SignatureInvalid
from domain.payments.webhooks import apply_event
from gpucloud.resources import Resources
from infra.stripe.signatures import verify_event

log = structlog.get_logger(__name__)

MAX_BODY = 512 * 1024  # Stripe's events are a few KiB; anything near this is not one


def _answer(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def stripe_webhook(request: Request) -> JSONResponse:
    res: Resources = request.app.state.resources
    settings = res.settings.payments
    count = res.metrics.stripe_webhooks
    if not settings.stripe_webhook_secrets:
        # 503, not 400: Stripe keeps retrying for days, so nothing is lost while an operator
        # sets STRIPE_WEBHOOK_SECRETS.
        count.labels(outcome="unconfigured").inc()
        return _answer(503, "WEBHOOKS_NOT_CONFIGURED", "Webhook secrets are not configured.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        count.labels(outcome="too_large").inc()
        return _answer(413, "PAYLOAD_TOO_LARGE", "The body is larger than any Stripe event.")
    body = await request.body()
    try:
        event = verify_event(body, request.headers.get("stripe-signature"),
                             settings.stripe_webhook_secrets,
                             settings.stripe_webhook_tolerance_seconds)  # fmt: skip
    except SignatureInvalid as exc:
        count.labels(outcome="bad_signature").inc()
        log.warning("stripe.webhook.refused", reason=str(exc))
        return _answer(400, "SIGNATURE_INVALID", "The signature does not verify.")
    try:
        outcome = await apply_event(res.uow(), event)
    except (ServiceUnavailable, Contention):
        count.labels(outcome="retry_later").inc()
        log.warning("stripe.webhook.deferred", event_id=event.id, type=event.type)
        return _answer(503, "TRY_AGAIN", "The event could not be applied now; send it again.")
    count.labels(outcome=outcome).inc()
    log.info("stripe.webhook", event_id=event.id, type=event.type, outcome=outcome)
    return JSONResponse({"received": True, "outcome": outcome})
