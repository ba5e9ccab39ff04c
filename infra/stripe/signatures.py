"""Verify a Stripe webhook (the `Stripe-Signature` header over the raw body) into a GatewayEvent.

Several secrets are tried in turn so a secret can be rotated without dropping deliveries. The
SDK checks the HMAC; the clock check is ours, because the SDK only refuses old timestamps and
only against the real clock, and a signed timestamp far in the future is as suspect as a stale
one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import stripe

from domain.payments.gateway import GatewayEvent, SignatureInvalid


def verify_event(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float | None = None,
) -> GatewayEvent:
    if not header:
        raise SignatureInvalid("no Stripe-Signature header")
    if not any(_signed_with(payload, header, secret) for secret in secrets if secret):
        raise SignatureInvalid("the signature matches none of our webhook secrets")
    # The timestamp is part of what was signed, so past this point it is the sender's own.
    age = (time.time() if now is None else now) - _timestamp(header)
    if abs(age) > tolerance_seconds:
        raise SignatureInvalid("the signature's timestamp is outside the tolerance")
    return _event(payload)


def _signed_with(payload: bytes, header: str, secret: str) -> bool:
    try:
        # tolerance=None: the SDK checks the HMAC only; the clock is checked above.
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return False
    return True


def _timestamp(header: str) -> int:
    # Read it the way the SDK does: the first `t=` item.
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            return int(value)
    raise SignatureInvalid("no timestamp in the Stripe-Signature header")


def _event(payload: bytes) -> GatewayEvent:
    try:
        data: Any = json.loads(payload)
        event_id, event_type = data["id"], data["type"]
        created, obj = data["created"], data["data"]["object"]
    except (ValueError, TypeError, KeyError) as exc:
        raise SignatureInvalid("the body is not a Stripe event") from exc
    if not (
        isinstance(event_id, str)
        and isinstance(event_type, str)
        and isinstance(created, int)
        and isinstance(obj, dict)
    ):
        raise SignatureInvalid("the body is not a Stripe event")
    return GatewayEvent(
        id=event_id, type=event_type, created=datetime.fromtimestamp(created, tz=UTC), object=obj
    )
