"""Money in integer minor units with an ISO 4217 currency; never floats."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# ISO 4217 codes we accept, with their minor-unit exponent. A closed list on purpose: an unknown
# code is a typo or an unsupported settlement currency, and either must be refused.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2,
    "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "JPY": 0, "KRW": 0, "MXN": 2, "MYR": 2,
    "NOK": 2, "NZD": 2, "PHP": 2, "PLN": 2, "SEK": 2, "SGD": 2, "THB": 2, "TRY": 2, "TWD": 2,
    "USD": 2, "ZAR": 2,
}  # fmt: skip


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if self.currency not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {self.currency!r}")

    @property
    def exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    def __str__(self) -> str:
        """As messages quote money, the same way everywhere: "12.50 USD"."""
        return f"{self.as_decimal()} {self.currency}"

    def as_decimal(self) -> Decimal:
        """The amount in major units, exact (for display by clients, never for arithmetic)."""
        # Built from its digits, not by arithmetic, so no context precision can round it.
        sign = 1 if self.amount_minor < 0 else 0
        digits = tuple(int(d) for d in str(abs(self.amount_minor)))
        return Decimal((sign, digits, -self.exponent))
