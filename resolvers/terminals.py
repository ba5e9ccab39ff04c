"""Browser terminal resolvers: the single-use ticket a browser opens `/terminal` with.

The websocket itself is not GraphQL (gpucloud/terminal.py). The ticket is bound to the Origin
of this request: a request without one (a script with an API token, say) is refused with
ORIGIN_REQUIRED, since nothing could check later that the websocket comes from the same page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import strawberry
from strawberry import Info
from strawberry.http.websocket_origin import normalize_origin

from domain.compute.terminals import TerminalKit, issue_ticket
from domain.errors import DomainError, ServiceUnavailable
from schema.context import AppContext
from schema.errors import typed_error
from schema.relay import expect_global_id
from schema.sent_ids import quoting
from schema.terminals import TerminalError, TerminalProblem, TerminalTicketPayload

TERMINAL_PATH = "/terminal"


def _kit(info: Info[AppContext, None]) -> TerminalKit:
    if info.context.terminals is None:
        raise ServiceUnavailable("terminal service")
    return info.context.terminals


async def create_terminal_ticket(
    info: Info[AppContext, None],
    allocation_id: strawberry.ID,
) -> TerminalTicketPayload | TerminalError:
    ctx = info.context
    kit = _kit(info)
    headers = getattr(ctx.request, "headers", None)
    sent = headers.get("origin") if headers is not None else None
    origin = normalize_origin(sent) if sent else None
    try:
        key = expect_global_id(allocation_id, "Allocation", "allocationId")
        with quoting(allocation_id, key, "allocationId"):
            secret, ticket = await issue_ticket(
                ctx.uow(), kit, ctx.principal, key, origin, datetime.now(UTC)
            )
    except DomainError as exc:
        return typed_error(exc, TerminalError, TerminalProblem)
    return TerminalTicketPayload(ticket=secret, expires_at=ticket.expires_at,
                                 url=f"{TERMINAL_PATH}?ticket={quote(secret)}")  # fmt: skip
