"""The browser terminal's rules: single-use tickets, who may open a terminal to what, and limits.

A browser cannot put an `Authorization` header on a websocket, and a long-lived credential must
never travel in a URL. So the client first asks for a ticket over GraphQL (authenticated as any
mutation is); the ticket is a random secret, good once, for `ticket_ttl`, for one user, one
allocation and the Origin the request came from. The websocket presents it in its URL; the
server takes it (deleting it in the same step) and checks it again against the Origin of the
websocket, the allocation's owner and its state.

Everything here is pure except the two services at the end, which take their ports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from domain.audit.records import RequestMeta, audit
from domain.compute.allocations import Allocation, AllocationState
from domain.errors import Conflict, DomainError, InvalidInput, NotFound, Problem
from domain.fleet.remote import CaLogin, NodeTarget
from domain.identity.principal import Principal, PrincipalKind
from domain.ports import UnitOfWork


class TerminalErrorCode(StrEnum):
    NOT_FOUND = "NOT_FOUND"  # no such allocation, or not the caller's
    INVALID_ID = "INVALID_ID"
    NOT_RUNNING = "NOT_RUNNING"
    ORIGIN_REQUIRED = "ORIGIN_REQUIRED"  # the ticket request carried no Origin header
    ORIGIN_MISMATCH = "ORIGIN_MISMATCH"  # the websocket came from another Origin
    TICKET_INVALID = "TICKET_INVALID"  # unknown, malformed or already used
    TICKET_EXPIRED = "TICKET_EXPIRED"
    TERMINAL_LIMIT = "TERMINAL_LIMIT"  # too many terminals open to this allocation


@dataclass(frozen=True)
class TerminalPolicy:
    ticket_ttl: timedelta = timedelta(seconds=30)
    idle_timeout: timedelta = timedelta(minutes=15)  # no input from the client for this long
    max_per_allocation: int = 4  # open terminals to one allocation, across every API process
    # How often an open terminal re-reads its allocation, in case a stop event was missed.
    recheck_interval: timedelta = timedelta(seconds=30)
    default_cols: int = 80
    default_rows: int = 24
    max_cols: int = 1000
    max_rows: int = 1000


@dataclass(frozen=True)
class TerminalTicket:
    """What a ticket grants: `user_id` may open a terminal to `allocation_id` from `origin`."""

    user_id: int
    allocation_id: int
    origin: str  # normalised ("https://app.example.com", no path, default port dropped)
    expires_at: datetime
    # The credential that asked for it: the terminal lasts no longer than it does.
    session_id: int | None = None
    token_id: int | None = None


class TerminalRefused(DomainError):
    """A terminal may not be opened (or a ticket issued); the first problem's code says why."""

    @property
    def code(self) -> TerminalErrorCode:
        return TerminalErrorCode(self.problems[0].code)


def refused(code: TerminalErrorCode, message: str, field: str | None = None) -> TerminalRefused:
    return TerminalRefused(Problem(code, message, field))


class TicketStore(Protocol):
    """Where tickets wait to be used: shared by every API process, each taken at most once."""

    async def put(self, ticket: TerminalTicket) -> str:
        """Store the ticket; returns its secret (the only way to take it)."""
        ...

    async def take(self, secret: str) -> TerminalTicket | None:
        """The ticket, deleted in the same step; None if unknown or already taken."""
        ...


@dataclass(frozen=True)
class TerminalKit:
    """What issuing and taking tickets needs, built once by the composition root."""

    tickets: TicketStore
    allowed_origins: frozenset[str]  # normalised; a ticket is bound to one of these
    policy: TerminalPolicy = TerminalPolicy()


def check_ticket(
    ticket: TerminalTicket | None, origin: str | None, now: datetime
) -> TerminalTicket:
    """The ticket a websocket presented, or why it does not open a terminal."""
    if ticket is None:
        raise refused(TerminalErrorCode.TICKET_INVALID,
                      "The terminal ticket is unknown or was already used; ask for a new one.")  # fmt: skip
    if now >= ticket.expires_at:
        raise refused(TerminalErrorCode.TICKET_EXPIRED,
                      "The terminal ticket expired; ask for a new one.")  # fmt: skip
    if origin is None or origin != ticket.origin:
        raise refused(TerminalErrorCode.ORIGIN_MISMATCH,
                      "The terminal ticket was issued to another Origin.")  # fmt: skip
    return ticket


def check_allocation(allocation: Allocation | None, ticket: TerminalTicket) -> Allocation:
    """The allocation a ticket names, if its owner may open a terminal to it now."""
    if allocation is None or allocation.user_id != ticket.user_id:
        raise refused(TerminalErrorCode.NOT_FOUND, "The ticket's allocation is gone.")
    return running(allocation)


def running(allocation: Allocation) -> Allocation:
    if allocation.state is not AllocationState.RUNNING or allocation.username is None:
        raise refused(TerminalErrorCode.NOT_RUNNING,
                      f"The allocation is {allocation.state.name}; a terminal needs it "
                      "RUNNING.")  # fmt: skip
    if allocation.node_id is None:  # pragma: no cover - a running allocation has a node
        raise refused(TerminalErrorCode.NOT_RUNNING, "The allocation has no node.")
    return allocation


def key_id(allocation: Allocation) -> str:
    """The login certificate's key id: in the node's sshd log and in our audit log."""
    return f"terminal:alloc-{allocation.id}:user-{allocation.user_id}"


def terminal_size(cols: object, rows: object, policy: TerminalPolicy) -> tuple[int, int]:
    """A PTY size from client input (the websocket URL or a resize message): whole numbers
    within bounds, else INVALID_SIZE."""
    try:
        c, r = int(str(cols)), int(str(rows))
    except ValueError:
        raise InvalidInput(
            Problem("INVALID_SIZE", "cols and rows must be whole numbers.")
        ) from None
    if not (1 <= c <= policy.max_cols and 1 <= r <= policy.max_rows):
        raise InvalidInput(Problem("INVALID_SIZE", f"cols and rows must be 1 to "
                                   f"{policy.max_cols} and 1 to {policy.max_rows}."))  # fmt: skip
    return c, r


async def issue_ticket(uow: UnitOfWork, kit: TerminalKit, user: Principal, allocation_id: int,
                       origin: str | None, now: datetime) -> tuple[str, TerminalTicket]:  # fmt: skip
    """A ticket for the caller's running allocation, bound to `origin` (normalised, one of the
    allowed origins). Another user's allocation is NOT_FOUND, as everywhere, whatever else is
    wrong with the request."""
    assert user.user_id is not None
    async with uow:
        found = await uow.allocations.get(allocation_id)
    if found is None or found.user_id != user.user_id:
        raise NotFound(Problem(TerminalErrorCode.NOT_FOUND,
                               f"No allocation with id {allocation_id}.", "allocationId"))  # fmt: skip
    if origin is None:
        raise refused(TerminalErrorCode.ORIGIN_REQUIRED,
                      "Ask for a terminal ticket from the page that will open the terminal: the "
                      "request needs an Origin header, and the websocket must come from the "
                      "same Origin.")  # fmt: skip
    if origin not in kit.allowed_origins:
        raise refused(TerminalErrorCode.ORIGIN_MISMATCH,
                      "Terminals may be opened only from the platform's own pages.")  # fmt: skip
    try:
        running(found)
    except TerminalRefused as exc:
        raise Conflict([replace(p, field="allocationId") for p in exc.problems]) from None
    ticket = TerminalTicket(user.user_id, allocation_id, origin, now + kit.policy.ticket_ttl,
                            user.session_id, user.token_id)  # fmt: skip
    return await kit.tickets.put(ticket), ticket


async def terminal_target(uow: UnitOfWork, ticket: TerminalTicket) -> tuple[Allocation, NodeTarget]:
    """The allocation a taken ticket names, checked again now, and how to log in to its node:
    as the allocation's own user, with a CA certificate that permits a PTY."""
    async with uow:
        allocation = check_allocation(await uow.allocations.get(ticket.allocation_id), ticket)
        assert allocation.node_id is not None and allocation.username is not None
        node = await uow.nodes.get(allocation.node_id)
    if node is None or node.host_key is None:  # never log in to a node whose key is not pinned
        raise refused(
            TerminalErrorCode.NOT_RUNNING, "The allocation's node cannot be reached safely."
        )
    login = CaLogin(key_id=key_id(allocation), permit_pty=True)
    return allocation, NodeTarget(node.id, node.host, node.port, allocation.username, login,
                                  node.host_key)  # fmt: skip


async def still_running(uow: UnitOfWork, allocation_id: int) -> bool:
    async with uow:
        found = await uow.allocations.get(allocation_id)
    return found is not None and found.state is AllocationState.RUNNING


async def still_entitled(uow: UnitOfWork, ticket: TerminalTicket, now: datetime) -> bool:
    """Whether the user may still hold the terminal: the account is active and the session or
    token that asked for the ticket has not been revoked or reached its absolute expiry. (A
    session's idle limit does not count: typing in the terminal is not seen by the session.)"""
    async with uow:
        user = await uow.users.get(ticket.user_id)
        if user is None or not user.active:
            return False
        if ticket.session_id is not None:
            session = await uow.sessions.get(ticket.session_id)
            return session is not None and session.revoked_at is None and now < session.expires_at
        if ticket.token_id is not None:
            token = await uow.api_tokens.get(ticket.token_id)
            return token is not None and token.revoked_at is None and now < token.expires_at
    return True


async def record(uow: UnitOfWork, ticket: TerminalTicket, action: str, meta: RequestMeta,
                 details: dict[str, Any]) -> None:  # fmt: skip
    """An audit row for a terminal's start ("terminal.opened") or end ("terminal.closed")."""
    actor = Principal(PrincipalKind.SESSION, ticket.user_id)
    async with uow:
        await uow.audit.append(audit(actor, meta, action, ("allocation", ticket.allocation_id),
                                     after=details))  # fmt: skip
        await uow.commit()
