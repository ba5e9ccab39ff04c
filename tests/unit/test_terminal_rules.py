"""The terminal's pure rules: which tickets open a terminal, and PTY sizes from client input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.compute.terminals import (
    TerminalErrorCode,
    TerminalPolicy,
    TerminalRefused,
    TerminalTicket,
    check_ticket,
    terminal_size,
)
from domain.errors import InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TICKET = TerminalTicket(7, 12, "https://app.test", NOW + timedelta(seconds=30))


def _code(ticket: TerminalTicket | None, origin: str | None, now: datetime = NOW) -> str:
    with pytest.raises(TerminalRefused) as refused:
        check_ticket(ticket, origin, now)
    return refused.value.code


def test_a_ticket_opens_only_before_it_expires_and_from_its_own_origin() -> None:
    assert check_ticket(TICKET, "https://app.test", NOW) == TICKET
    assert _code(None, "https://app.test") == TerminalErrorCode.TICKET_INVALID
    assert _code(TICKET, "https://app.test", TICKET.expires_at) == TerminalErrorCode.TICKET_EXPIRED
    assert _code(TICKET, "https://other.test") == TerminalErrorCode.ORIGIN_MISMATCH
    assert _code(TICKET, None) == TerminalErrorCode.ORIGIN_MISMATCH


def test_terminal_sizes_are_whole_numbers_within_bounds() -> None:
    policy = TerminalPolicy()
    assert terminal_size("100", 30, policy) == (100, 30)
    for cols, rows in (("x", 1), (0, 24), (80, policy.max_rows + 1), (None, 24), (1.5, 2)):
        with pytest.raises(InvalidInput):
            terminal_size(cols, rows, policy)
