"""Extensions that see each result of an operation streamed over the websocket.

Strawberry's `on_stream_result` hook costs, for every result of every subscription, a context
manager built anew per extension (the extension inspected, its generator wrapped, an exit stack
entered): a third of the API process's time per delivered event in a 10,000-subscriber fan-out
(bench/fanout.py). A `ResultWatcher` is told of each result with one plain call instead, made
by the schema's extension runner (resolvers/extensions_runner.py) before the result is sent.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions import SchemaExtension


class ResultWatcher(SchemaExtension):
    def result_streamed(self, result: Any) -> None:
        """Called with each streamed result (a strawberry ExecutionResult, or a pre-execution
        error), before it is sent; it may change the result's errors."""
        raise NotImplementedError
