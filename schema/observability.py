"""Schema extensions that report each operation's name, outcome and duration."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from schema.stream_results import ResultWatcher

Observer = Callable[[str, str, float], None]


def _report(observe: Observer, ctx: ExecutionContext, result: Any, started: float) -> None:
    errors = getattr(result, "errors", None) if result is not None else None
    outcome = "error" if (errors or ctx.pre_execution_errors) else "ok"
    observe(ctx.operation_name or "anonymous", outcome, time.perf_counter() - started)


def operation_metrics(observe: Observer) -> type[SchemaExtension]:
    """Build the extension around `observe(operation_name, outcome, seconds)`."""

    class OperationMetrics(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            started = time.perf_counter()
            yield
            _report(observe, self.execution_context, self.execution_context.result, started)

    return OperationMetrics


def streamed_operation_metrics(observe: Observer) -> type[SchemaExtension]:
    """The same for operations streamed over the websocket, counted at their first result: a
    query's or mutation's answer, a subscription's first event or its error, timed from the
    operation's start. An `on_operation` hook would be held open for a subscription's whole
    life (part of every idle subscriber's memory, bench/fanout.py) to report a duration that
    is only how long the client stayed."""

    class StreamedOperationMetrics(ResultWatcher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.started: float | None = time.perf_counter()  # made as the operation starts

        def result_streamed(self, result: Any) -> None:
            if self.started is not None:
                _report(observe, self.execution_context, result, self.started)
                self.started = None

    return StreamedOperationMetrics
