"""Browser terminal types: the ticket a browser opens `/terminal` with, and the area's error."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from domain.compute.terminals import TerminalErrorCode as DomainTerminalErrorCode
from schema.errors import Error

TerminalErrorCode = strawberry.enum(
    DomainTerminalErrorCode, description="Why a terminal ticket was refused."
)


@strawberry.type(description="A single-use ticket for opening a browser terminal.")
class TerminalTicketPayload:
    ticket: str = strawberry.field(
        description="Good once, until `expiresAt`, for this allocation, for you, from the "
        "Origin this request came from."
    )
    expires_at: datetime
    url: str = strawberry.field(
        description="The websocket path to open (on this API's host, wss:// in production), "
        "ticket included; add `&cols=..&rows=..` for the initial terminal size. Every frame "
        "is input (stock xterm.js attach addon) unless the handshake asks for the "
        "`gpucloud.terminal.v1` subprotocol, in which text frames carry resize and ping."
    )


@strawberry.type(description="One problem with a terminal ticket request.")
class TerminalProblem:
    code: TerminalErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="A terminal ticket was refused; `problems` lists every reason.")
class TerminalError(Error):
    code: TerminalErrorCode  # type: ignore[valid-type]
    problems: list[TerminalProblem]


TerminalTicketResult = Annotated[
    TerminalTicketPayload | TerminalError, strawberry.union("TerminalTicketResult")
]
