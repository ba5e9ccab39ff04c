"""Stripe adapter: the `PaymentGateway` port over the stripe SDK, and webhook verification."""

from infra.stripe.gateway import StripeGateway
from infra.stripe.signatures import verify_event

__all__ = ["StripeGateway", "verify_event"]
