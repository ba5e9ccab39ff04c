"""Money as every client sees it: one type for prices, balances, payments and notices."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from domain.money import Money as DomainMoney


# Computed only when selected: a page of prices would otherwise build a Decimal per row.
def _exponent(root: Money) -> int:
    return root.domain.exponent


def _amount(root: Money) -> Decimal:
    return root.domain.as_decimal()


@strawberry.type(description="An amount in integer minor units of an ISO 4217 currency.")
class Money:
    amount_minor: int = strawberry.field(description="Integer minor units, e.g. cents.")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")
    domain: strawberry.Private[DomainMoney]
    exponent: int = strawberry.field(
        resolver=_exponent, description="Minor units per major unit, as a power of 10."
    )
    amount: Decimal = strawberry.field(
        resolver=_amount, description="The exact amount in major units."
    )

    @classmethod
    def from_domain(cls, money: DomainMoney) -> Money:
        return cls(amount_minor=money.amount_minor, currency=money.currency, domain=money)

    @classmethod
    def of(cls, amount_minor: int, currency: str) -> Money:
        """From the minor units and currency the ledger and payments keep side by side."""
        return cls.from_domain(DomainMoney(amount_minor, currency))
