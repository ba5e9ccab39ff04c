"""Setting up money and people for allocation tests and benchmarks."""

from __future__ import annotations

from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.transfers import TransferCode
from domain.ports import LedgerRepository


async def credit(ledger: LedgerRepository, user_id: int, amount: int) -> None:
    """Give the user's USD wallet `amount` of promotional credit (in the caller's transaction)."""
    await book.move(ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                    wallet(user_id, "USD"), amount, TransferCode.CREDIT)  # fmt: skip


def signed_in(user_id: int) -> Principal:
    """The user as a browser session would act: every scope a user has."""
    return Principal(PrincipalKind.SESSION, user_id, Role.USER, ROLE_SCOPES[Role.USER])
