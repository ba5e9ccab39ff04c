"""Client idempotency keys under concurrency: twins sent at once produce one result, and each
twin answers with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.errors import Conflict
from domain.identity.scopes import Role
from domain.ledger.services import grant_credit, wallet_view
from domain.payments.topups import TopUpPolicy, create_top_up
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.stripe.gateway import StripeGateway
from tests.support.compute import signed_in, stored_user
from tests.support.localstripe import LocalStripe

META = RequestMeta(request_id="test")


@pytest.fixture
async def wide(database_url: str, engine: AsyncEngine) -> Any:
    """Units of work on a pool large enough for ten at once (`engine` cleans the tables)."""
    eng = make_engine(database_url, pool_size=12)
    yield lambda: SqlUnitOfWork(eng)
    await eng.dispose()


async def test_ten_concurrent_credits_with_one_key_credit_once(
    wide: Any, engine: AsyncEngine
) -> None:
    admin = signed_in(await stored_user(wide, Role.ADMIN), Role.ADMIN)
    target = await stored_user(wide)

    results = await asyncio.gather(*(
        grant_credit(wide(), admin, META, target, 700, "USD", "goodwill", "credit-key-1")
        for _ in range(10)
    ))  # fmt: skip

    assert len({t.id for t in results}) == 1  # every twin answers with the one transfer
    assert (await wallet_view(wide(), target, "USD")).balance == 700
    async with engine.connect() as conn:
        credited = (await conn.execute(text("SELECT count(*) FROM ledger_transfers "
                                           "WHERE code = 'credit'"))).scalar_one()  # fmt: skip
        audits = (await conn.execute(text("SELECT count(*) FROM audit_events "
                                          "WHERE action = 'billing.credit.granted'"))).scalar_one()  # fmt: skip
    assert (credited, audits) == (1, 1)

    with pytest.raises(Conflict) as caught:  # same key, another request
        await grant_credit(wide(), admin, META, target, 701, "USD", "goodwill", "credit-key-1")
    assert caught.value.problems[0].code == "IDEMPOTENCY_KEY_REUSED"


async def test_concurrent_top_ups_with_one_key_make_one_payment(
    wide: Any, engine: AsyncEngine, localstripe: LocalStripe
) -> None:
    buyer = signed_in(await stored_user(wide))
    gateway = StripeGateway(localstripe.api_key, localstripe.url, timeout_seconds=10)
    try:
        results = await asyncio.gather(*(
            create_top_up(wide(), gateway, TopUpPolicy(), buyer, 2500, "USD", "top-up-key-1")
            for _ in range(5)
        ))  # fmt: skip
    finally:
        await gateway.aclose()

    assert len({r.payment.id for r in results}) == 1
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT count(*) FROM payments"))).scalar_one()
        keys = (await conn.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar_one()
    assert (rows, keys) == (1, 1)
