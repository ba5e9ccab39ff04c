"""Setting up money and people for allocation tests and benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.transfers import TransferCode
from domain.ports import LedgerRepository, UnitOfWork


async def credit(ledger: LedgerRepository, user_id: int, amount: int) -> None:
    """Give the user's USD wallet `amount` of promotional credit (in the caller's transaction)."""
    await book.move(ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                    wallet(user_id, "USD"), amount, TransferCode.CREDIT)  # fmt: skip


def signed_in(user_id: int, role: Role = Role.USER) -> Principal:
    """The user as a browser session would act: every scope of the role."""
    return Principal(PrincipalKind.SESSION, user_id, role, ROLE_SCOPES[role])


async def stored_user(uow: Callable[[], UnitOfWork], role: Role = Role.USER) -> int:
    """A user row (no password), committed; returns its id."""
    async with uow() as u:
        made = await u.users.add(f"{uuid.uuid4().hex[:10]}@example.com", None, role)
        await u.commit()
        return int(made.id)
