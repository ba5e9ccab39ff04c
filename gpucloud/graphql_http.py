"""GraphQL over HTTP, strictly: requests refused before any GraphQL runs (not JSON, no query, a
subscription over HTTP...) are answered in the shape every GraphQL error has, `{"errors":
[{"message", "extensions": {"code"}}]}`, with an HTTP status, never as plain text (Strawberry's
own answer) or an INTERNAL error with a stack trace in the log."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from schema.context import AppContext


class RequestErrorCode(StrEnum):
    INVALID_JSON = "INVALID_JSON"  # the body is not JSON (or not UTF-8)
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # POST without application/json
    BAD_REQUEST = "BAD_REQUEST"  # JSON, but not a GraphQL request: no query, bad variables...
    # Subscriptions run over the websocket (graphql-transport-ws) at the same path.
    SUBSCRIPTION_REQUIRES_WEBSOCKET = "SUBSCRIPTION_REQUIRES_WEBSOCKET"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # GET only serves the IDE; operations are POSTed
    NOT_FOUND = "NOT_FOUND"  # GET /graphql with the IDE turned off


class RequestRefused(HTTPException):
    def __init__(self, code: RequestErrorCode, message: str, status: int = 400) -> None:
        super().__init__(status, message)
        self.code = code


_BY_STATUS = {
    404: RequestErrorCode.NOT_FOUND,
    405: RequestErrorCode.METHOD_NOT_ALLOWED,
}


def refusal_response(exc: HTTPException) -> JSONResponse:
    """The JSON answer to a refusal: ours carry a code; Strawberry's own (a few shapes of
    request it checks itself) get one from their status, and their message as it is."""
    code = exc.code if isinstance(exc, RequestRefused) else _BY_STATUS.get(exc.status_code)
    message = exc.reason if exc.reason.endswith(".") else f"{exc.reason}."
    message = message[0].upper() + message[1:]
    headers = {"allow": "POST"} if code is RequestErrorCode.METHOD_NOT_ALLOWED else None
    error = {"message": message, "extensions": {"code": str(code or RequestErrorCode.BAD_REQUEST)}}
    return JSONResponse({"errors": [error]}, status_code=exc.status_code, headers=headers)


class StrictHttpGraphQL(GraphQL[AppContext, None]):
    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as refused:  # Strawberry would answer these in plain text
            if isinstance(request, WebSocket):
                raise
            return refusal_response(refused)

    def parse_json(self, data: str | bytes) -> Any:
        """The HTTP body (and GET's variables): a JSON object, or refused with a code."""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise RequestRefused(
                RequestErrorCode.INVALID_JSON, "The request body is not valid JSON (UTF-8)."
            ) from None
        if not isinstance(parsed, dict):
            raise RequestRefused(
                RequestErrorCode.BAD_REQUEST,
                'The request body must be a JSON object: {"query": "...", '
                '"variables": {...}, "operationName": "..."}.',
            )
        return parsed

    async def parse_http_body(self, request: Any) -> Any:
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if request.method == "POST" and content_type != "application/json":
            raise RequestRefused(
                RequestErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "Send the operation as JSON, with Content-Type: application/json.",
            )
        return await super().parse_http_body(request)

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Any,
        context: AppContext,
        root_value: Any,
        request_data: Any,
    ) -> Any:
        # Queries and mutations are POSTed; subscriptions need the websocket (its limits,
        # heartbeat and revocation), and GET executes nothing. Strawberry would let a
        # subscription through to fail inside graphql-core as an INTERNAL error.
        allowed = {OperationType.QUERY, OperationType.MUTATION}
        if request_adapter.method != "POST":
            allowed = set()
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError:
            if request_adapter.method != "POST":
                raise RequestRefused(
                    RequestErrorCode.METHOD_NOT_ALLOWED,
                    "Operations are not allowed over GET (it serves the IDE only): POST them as JSON.",
                    405,
                ) from None
            raise RequestRefused(
                RequestErrorCode.SUBSCRIPTION_REQUIRES_WEBSOCKET,
                "Subscriptions are served over a websocket at this path (graphql-transport-ws), "
                "not over HTTP.",
            ) from None
        except CannotGetOperationTypeError as exc:
            raise RequestRefused(RequestErrorCode.BAD_REQUEST, exc.as_http_error_reason()) from None
        except MissingQueryError:
            raise RequestRefused(
                RequestErrorCode.BAD_REQUEST,
                'No GraphQL query found in the request: send {"query": "..."}.',
            ) from None
