"""The worker's periodic money work: expired holds are released, refunds whose outcome was
unknown are finished, each step on its own so one failure does not stop the others."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.identity.scopes import Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.holds import HoldStatus
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import TransferCode
from infra.settings import Settings
from infra.stripe.factory import UnconfiguredGateway
from jobs.money import MoneyTicker


async def test_a_tick_releases_expired_holds_and_survives_an_unreachable_stripe(
    uow: Any, settings: Settings
) -> None:
    async with uow() as u:
        user = await u.users.add(f"{uuid.uuid4().hex[:8]}@example.com", None, Role.USER)
        await book.move(u.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                        wallet(user.id, "USD"), 1000, TransferCode.CREDIT)  # fmt: skip
        past = datetime.now(UTC) - timedelta(hours=2)
        hold = await book.open_hold(u.ledger, LedgerPolicy(), user.id, AccountKind.COMPUTE_REVENUE,
                                    400, "USD", code=TransferCode.USAGE, reference=None,
                                    ttl=timedelta(minutes=1), now=past)  # fmt: skip
        await u.commit()

    # Stripe is "configured" but every call fails: the hold is still released.
    ticker = MoneyTicker(uow, UnconfiguredGateway(), settings.payments)
    await ticker.tick()
    await ticker.reconcile()  # logs the failure, raises nothing

    async with uow() as u:
        released = (await u.ledger.holds([hold.id]))[hold.id]
        account = await u.ledger.find_account(wallet(user.id, "USD"))
        assert account is not None
        sums = (await u.ledger.balances([account.id]))[account.id]
    assert released.status is HoldStatus.EXPIRED
    assert (sums.balance, sums.held, sums.available) == (1000, 0, 1000)
