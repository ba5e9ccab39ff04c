"""A schema extension that reports each operation's name, outcome and duration."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from strawberry.extensions import SchemaExtension

Observer = Callable[[str, str, float], None]


def operation_metrics(observe: Observer) -> type[SchemaExtension]:
    """Build the extension around `observe(operation_name, outcome, seconds)`."""

    class OperationMetrics(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            started = time.perf_counter()
            yield
            ctx = self.execution_context
            name = ctx.operation_name or "anonymous"
            result = ctx.result
            errors = getattr(result, "errors", None) if result is not None else None
            outcome = "error" if (errors or ctx.pre_execution_errors) else "ok"
            observe(name, outcome, time.perf_counter() - started)

    return OperationMetrics
