"""The schema's extension runner: Strawberry's, with less work per operation and per streamed
result, since a subscription is held by each of thousands of idle sockets and every event is a
result for each of them (bench/fanout.py)."""

from __future__ import annotations

import contextlib
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from schema.stream_results import ResultWatcher

_NO_HOOKS = contextlib.nullcontext()  # stateless: one for every operation and result


def _overrides(extension: SchemaExtension, name: str) -> bool:
    return getattr(type(extension), name) is not getattr(SchemaExtension, name)


class LeanExtensionsRunner(SchemaExtensionsRunner):
    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        found = self.extensions
        self._watchers = [extension for extension in found if isinstance(extension, ResultWatcher)]
        self._result_hooks = any(_overrides(extension, "on_stream_result") for extension in found)
        self._results = any(_overrides(extension, "get_results") for extension in found)

    def operation(self) -> Any:
        # With no `on_operation` hook (the websocket's extensions have none), nothing to enter:
        # Strawberry's manager would hold an exit stack for the operation's whole life.
        manager = super().operation()
        return manager if manager.hooks else _NO_HOOKS

    def on_stream_result(self, result: Any) -> Any:
        for watcher in self._watchers:
            watcher.result_streamed(result)
        return super().on_stream_result(result) if self._result_hooks else _NO_HOOKS

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        if self._results:
            return await super().get_extensions_results(ctx)
        return dict(ctx.extensions_results)  # as Strawberry's, with no extension to ask
