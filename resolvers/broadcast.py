"""One execution per event for subscriptions whose answer is the same for every subscriber.

graphql-core executes a subscription's selection set once per event per socket. For a public
broadcast (`catalogChanged`), 5,000 sockets asking the same document would mean 5,000 identical
executions, which was most of the API process's time in bench/fanout.py. Such payloads are made
once per event and shared (resolvers/shared_reads.py); here the first socket to execute a given
operation (the parsed document is shared through the parser cache) and variables on that
payload does it, and the others take its result. Only error-free results are shared; a payload
type belongs in BROADCAST only if none of its fields depends on who is asking.
"""

from __future__ import annotations

import asyncio
from typing import Any

from graphql import ExecutionResult, OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from schema.catalog import CatalogChange
from schema.notifications import Notification

# A notification's view is shared only by its owner's sockets (resolvers/shared_reads.py).
BROADCAST: tuple[type, ...] = (CatalogChange, Notification)


class _Shared:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: ExecutionResult | None = None  # None: not shareable, execute yourself


_RESULTS = (
    "_shared_results"  # on the payload itself: {(operation, variables): result}, gone with it
)


class SharedEventExecution(StrawberryGraphQLCoreExecutionContext):
    def execute_operation(self, serially: bool | None = None) -> Any:
        payload = self.root_value
        if (not isinstance(payload, BROADCAST)
                or self.operation.operation is not OperationType.SUBSCRIPTION):  # fmt: skip
            return super().execute_operation(serially)
        # The operation node is alive as long as its subscription, so its id names it here.
        key = (id(self.operation), repr(sorted(self.variable_values.coerced.items())))
        results: dict[tuple[int, str], _Shared] = vars(payload).setdefault(_RESULTS, {})
        shared = results.get(key)
        if shared is not None:
            return self._follow(shared, serially)
        shared = results[key] = _Shared()
        outcome = super().execute_operation(serially)
        if not self.is_awaitable(outcome):
            _settle(shared, outcome)
            return outcome
        return self._lead(shared, outcome)

    async def _lead(self, shared: _Shared, outcome: Any) -> Any:
        try:
            result = await outcome
            _settle(shared, result)
            return result
        finally:
            shared.done.set()  # on failure too: followers execute for themselves

    async def _follow(self, shared: _Shared, serially: bool | None) -> Any:
        await shared.done.wait()
        if shared.result is not None:
            return shared.result
        outcome = super().execute_operation(serially)
        return await outcome if self.is_awaitable(outcome) else outcome


def _settle(shared: _Shared, result: Any) -> None:
    if isinstance(result, ExecutionResult) and not result.errors:
        shared.result = result
    shared.done.set()
