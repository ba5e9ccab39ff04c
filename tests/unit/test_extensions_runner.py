"""LeanExtensionsRunner (resolvers/extensions_runner.py): watchers see every streamed result with
a plain call, Strawberry's hooks still run when an extension has one, and nothing is entered or
asked of extensions that have no hook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from resolvers.errors import StreamedErrorShaping
from resolvers.extensions_runner import LeanExtensionsRunner
from schema.stream_results import ResultWatcher


class Seen(ResultWatcher):
    def __init__(self) -> None:
        super().__init__()
        self.results: list[Any] = []

    def result_streamed(self, result: Any) -> None:
        self.results.append(result)


class Hooked(SchemaExtension):
    def __init__(self) -> None:
        super().__init__()
        self.entered = 0
        self.operations = 0

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self.entered += 1
        yield

    def on_operation(self) -> Iterator[None]:
        self.operations += 1
        yield

    def get_results(self) -> dict[str, Any]:
        return {"hooked": True}


class Context:
    def __init__(self) -> None:
        self.extensions_results: dict[str, Any] = {"from_context": 1}


def runner(*extensions: SchemaExtension) -> LeanExtensionsRunner:
    return LeanExtensionsRunner(Context(), list(extensions))  # type: ignore[arg-type]


async def test_watchers_see_each_result_and_nothing_is_entered_without_hooks() -> None:
    seen = Seen()
    lean = runner(seen)
    results = [ExecutionResult(data={"n": n}, errors=None) for n in range(3)]
    for result in results:
        manager = lean.on_stream_result(result)
        async with manager:
            pass
        assert manager is lean.on_stream_result(result)  # the one shared no-op
    assert seen.results == [result for result in results for _ in range(2)]  # each call
    async with lean.operation():
        pass
    assert await lean.get_extensions_results(Context()) == {"from_context": 1}  # type: ignore[arg-type]


async def test_strawberry_hooks_still_run_beside_watchers() -> None:
    seen, hooked = Seen(), Hooked()
    lean = runner(seen, hooked)
    result = ExecutionResult(data=None, errors=None)
    async with lean.on_stream_result(result):
        pass
    async with lean.operation():
        pass
    assert (seen.results, hooked.entered, hooked.operations) == ([result], 1, 1)
    found = await lean.get_extensions_results(Context())  # type: ignore[arg-type]
    assert found == {"hooked": True, "from_context": 1}


async def test_streamed_errors_are_shaped_before_they_are_sent() -> None:
    result = ExecutionResult(data=None, errors=[GraphQLError("boom", original_error=KeyError())])
    runner(StreamedErrorShaping()).on_stream_result(result)
    assert result.errors is not None
    assert result.errors[0].extensions["code"] == "INTERNAL"
    assert "boom" not in result.errors[0].message
