"""Money: integer minor units, exact decimal display, a closed list of currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.money import CURRENCY_EXPONENTS, Money, is_known_currency


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1999, "USD", "19.99"),
        (1, "USD", "0.01"),
        (100, "USD", "1.00"),
        (0, "EUR", "0.00"),
        (-5, "USD", "-0.05"),
        (500, "JPY", "500"),
        (1, "JPY", "1"),
        (12345, "KRW", "12345"),
    ],
)
def test_as_decimal_is_exact(amount: int, currency: str, expected: str) -> None:
    value = Money(amount, currency).as_decimal()
    assert value == Decimal(expected)
    assert str(value) == expected


def test_exponents() -> None:
    assert Money(1, "JPY").exponent == 0
    assert Money(1, "USD").exponent == 2


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def test_largest_bigint_amount_is_exact() -> None:
    assert str(Money(2**63 - 1, "USD").as_decimal()) == "92233720368547758.07"


def test_amounts_beyond_28_digits_stay_exact() -> None:
    assert str(Money(10**30 + 1, "USD").as_decimal()) == "10000000000000000000000000000.01"


@given(INT64, st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_as_decimal_scales_back_to_the_minor_amount(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    assert money.as_decimal().scaleb(money.exponent) == amount
    assert money.as_decimal().as_tuple().exponent == -money.exponent


@pytest.mark.parametrize("code", ["XYZ", "usd", "", " USD", "US"])
def test_unknown_currency_is_refused(code: str) -> None:
    assert not is_known_currency(code)
    with pytest.raises(ValueError, match="unknown currency"):
        Money(100, code)


def test_known_currency() -> None:
    assert is_known_currency("USD")
    assert is_known_currency("JPY")
