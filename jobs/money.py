"""Periodic money work in the worker: release expired holds, finish refunds whose outcome is
unknown, and reconcile with Stripe. Every step is safe on several workers at once: holds and
refunds are claimed with SKIP LOCKED, Stripe calls carry our idempotency keys, and a finding is
recorded once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import structlog

from domain.ledger.services import expire_holds
from domain.payments.reconcile import reconcile
from domain.payments.refunding import settle_refunds
from domain.ports import PaymentGateway, UnitOfWork
from infra.payment_settings import PaymentSettings

log = structlog.get_logger(__name__)


class MoneyTicker:
    def __init__(
        self, uow: Callable[[], UnitOfWork], gateway: PaymentGateway, settings: PaymentSettings
    ) -> None:
        self._uow = uow
        self._gateway = gateway
        self._settings = settings
        self._next_reconcile = time.monotonic() + 60  # let the worker settle in first

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.money_tick_seconds)

    async def tick(self) -> None:
        # One failing step must not stop the others, nor the next tick.
        try:
            released = await expire_holds(self._uow())
            if released:
                log.info("ledger.holds_expired", count=released)
        except Exception:
            log.exception("ledger.expire_failed")
        if not self._settings.stripe_enabled:
            return
        try:
            await settle_refunds(self._uow(), self._gateway)
        except Exception:
            log.exception("payments.settle_failed")
        if time.monotonic() >= self._next_reconcile:
            self._next_reconcile = time.monotonic() + self._settings.reconcile_interval_seconds
            await self.reconcile()

    async def reconcile(self) -> None:
        now = datetime.now(UTC)
        since = now - timedelta(hours=self._settings.reconcile_window_hours)
        try:
            found = await reconcile(self._uow(), self._gateway, since, now)
        except Exception:
            log.exception("payments.reconcile_failed")
            return
        for finding in found:
            log.warning("payments.reconcile.finding", kind=str(finding.kind),
                        stripe_object=finding.stripe_object_id, detail=finding.detail)  # fmt: skip
        log.info("payments.reconciled", since=since.isoformat(), new_findings=len(found))
