"""Stripe-shaped webhook events, signed as Stripe signs them, for what localstripe cannot send
(refund updates, checkout.session.completed, canceled or processing intents) and for forged,
stale or tampered deliveries.

The signature is computed here from Stripe's documented scheme, not with the SDK, so a test of
our verifier does not check the SDK against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx

API_VERSION = "2024-06-20"
WEBHOOK_PATH = "/stripe/webhook"
# Stripe's status for each payment_intent.* event we build.
INTENT_STATUS = {
    "succeeded": "succeeded",
    "payment_failed": "requires_payment_method",
    "canceled": "canceled",
    "processing": "processing",
}


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value: `t=<timestamp>,v1=<HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(8)}"


def event(
    type: str,  # noqa: A002 (Stripe's own field name)
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "type": type,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "api_version": API_VERSION,
        "livemode": False,
    }


def payment_intent(
    outcome: str, *, intent_id: str | None = None, amount: int = 1000, currency: str = "usd",
    metadata: dict[str, str] | None = None, created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A `payment_intent.<outcome>` event: succeeded, payment_failed, canceled or processing."""
    status = INTENT_STATUS[outcome]
    obj: dict[str, Any] = {
        "id": intent_id or new_id("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount if status == "succeeded" else 0,
        "currency": currency.lower(),
        "status": status,
        "metadata": metadata or {},
        "created": int(time.time()) if created is None else created,
        "client_secret": None,
        "last_payment_error": (
            {"code": "card_declined", "message": "Your card was declined."}
            if outcome == "payment_failed"
            else None
        ),
        "cancellation_reason": "requested_by_customer" if outcome == "canceled" else None,
    }
    return event(f"payment_intent.{outcome}", obj, event_id=event_id)


def refund(
    status: str, *, payment_intent: str, refund_id: str | None = None, amount: int = 1000,
    currency: str = "usd", metadata: dict[str, str] | None = None,
    failure_reason: str | None = None, event_type: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A refund event with the refund in `status` (pending, succeeded, failed, canceled).
    The type is `refund.failed` for a failed refund, else `refund.updated`, unless
    `event_type` says otherwise."""
    if status == "failed" and failure_reason is None:
        failure_reason = "expired_or_canceled_card"
    obj = {
        "id": refund_id or new_id("re"),
        "object": "refund",
        "amount": amount,
        "currency": currency.lower(),
        "payment_intent": payment_intent,
        "charge": new_id("ch"),
        "status": status,
        "metadata": metadata or {},
        "failure_reason": failure_reason,
        "created": int(time.time()),
    }
    default_type = "refund.failed" if status == "failed" else "refund.updated"
    return event(event_type or default_type, obj, event_id=event_id)


def checkout_completed(
    *, payment_intent: str, amount_total: int, currency: str = "usd",
    metadata: dict[str, str] | None = None, session_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A `checkout.session.completed` event for a paid one-off payment."""
    obj = {
        "id": session_id or new_id("cs"),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": payment_intent,
        "amount_total": amount_total,
        "currency": currency.lower(),
        "metadata": metadata or {},
        "created": int(time.time()),
    }
    return event("checkout.session.completed", obj, event_id=event_id)


def body_of(evt: dict[str, Any] | bytes) -> bytes:
    return evt if isinstance(evt, bytes) else json.dumps(evt).encode()


async def deliver(
    client_or_url: httpx.AsyncClient | str,
    event: dict[str, Any] | bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    signature: str | None = None,
) -> httpx.Response:
    """POST the event's raw bytes to /stripe/webhook as Stripe would. `signature` replaces the
    whole header value (a forged or malformed one); `timestamp` signs with another time."""
    payload = body_of(event)
    header = signature
    if header is None:
        header = sign(payload, secret, int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header}
    if isinstance(client_or_url, httpx.AsyncClient):
        return await client_or_url.post(WEBHOOK_PATH, content=payload, headers=headers)
    async with httpx.AsyncClient(base_url=client_or_url) as client:
        return await client.post(WEBHOOK_PATH, content=payload, headers=headers)
