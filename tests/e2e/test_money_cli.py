"""`gpucloud ledger verify` and `gpucloud billing reconcile` as an operator runs them."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from domain.identity.scopes import Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.transfers import TransferCode
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.stripe.gateway import StripeGateway
from tests.support.localstripe import LocalStripe
from tests.support.processes import gpucloud


async def _credit(database_url: str, amount: int) -> int:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with SqlUnitOfWork(engine) as uow:
            user = await uow.users.add(f"{uuid.uuid4().hex[:8]}@example.com", None, Role.USER)
            await book.move(uow.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                            wallet(user.id, "USD"), amount, TransferCode.CREDIT)  # fmt: skip
            await uow.commit()
            return user.id
    finally:
        await engine.dispose()


async def _sql(database_url: str, statement: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_ledger_verify_passes_then_names_a_tampered_balance(service_env, engine) -> None:  # type: ignore[no-untyped-def]
    url = service_env["DATABASE_URL"]
    asyncio.run(_credit(url, 1500))
    ok = gpucloud("ledger", "verify", env=service_env)
    assert ok.returncode == 0, ok.stderr
    assert "ledger verified: 2 accounts and 1 transfers" in ok.stdout

    # Someone edits the projection behind the ledger's back; verify names the account.
    asyncio.run(_sql(url, "UPDATE ledger_balances SET credits_posted = credits_posted + 1 "
                          "WHERE guarded"))  # fmt: skip
    bad = gpucloud("ledger", "verify", env=service_env)
    assert bad.returncode == 1
    assert "balance row says debits/credits posted 0/1501" in bad.stderr
    assert "ledger verify FAILED" in bad.stderr
    assert "Traceback" not in bad.stderr


async def _refund_made_at_stripe(stripe: LocalStripe) -> str:
    gateway = StripeGateway(stripe.api_key, stripe.url, timeout_seconds=10)
    try:
        intent = await gateway.create_payment_intent(
            900, "USD", idempotency_key=uuid.uuid4().hex, metadata={}
        )
        await stripe.pay(intent.id)
        refund = await gateway.create_refund(intent.id, 400, idempotency_key=uuid.uuid4().hex,
                                             metadata={})  # fmt: skip
        return refund.id
    finally:
        await gateway.aclose()


def test_billing_reconcile_records_a_refund_made_outside_the_platform(  # type: ignore[no-untyped-def]
    service_env, engine, localstripe
) -> None:
    refund_id = asyncio.run(_refund_made_at_stripe(localstripe))
    first = gpucloud("billing", "reconcile", "--hours", "1", env=service_env)
    assert first.returncode == 1, first.stderr
    assert f"refund_outside_platform\t{refund_id}" in first.stdout
    # Flagged once: the next run finds nothing new.
    second = gpucloud("billing", "reconcile", "--hours", "1", env=service_env)
    assert f"refund_outside_platform\t{refund_id}" not in second.stdout


def test_billing_reconcile_needs_stripe(service_env) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in service_env.items() if not k.startswith("STRIPE_")}
    result = gpucloud("billing", "reconcile", env=env)
    assert result.returncode == 2
    assert "STRIPE_SECRET_KEY is not set" in result.stderr
