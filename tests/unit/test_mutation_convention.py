"""The mutation convention every area follows: a union of payload and typed error, proven on a
small schema built from the real error types, independent of any area's resolvers."""

from __future__ import annotations

from typing import Annotated

import strawberry

from domain.catalog.sku import SkuSpec
from domain.errors import DomainError
from schema.errors import SkuError, SkuProblem, typed_error


@strawberry.type
class CheckSkuPayload:
    name: str


CheckSkuResult = Annotated[CheckSkuPayload | SkuError, strawberry.union("CheckSkuResult")]


@strawberry.type
class Mutation:
    @strawberry.mutation
    def check_sku(self, gpu_count: int, currency: str) -> CheckSkuResult:
        try:
            spec = SkuSpec.create(name="probe", gpu_model="H200", gpu_count=gpu_count, vcpus=1,
                                  ram_gib=1, disk_gib=1, region="eu-west",
                                  hourly_price_minor=1, currency=currency)  # fmt: skip
        except DomainError as exc:
            return typed_error(exc, SkuError, SkuProblem)
        return CheckSkuPayload(name=spec.name)


@strawberry.type
class Query:
    ok: bool = True


schema = strawberry.Schema(query=Query, mutation=Mutation)
MUTATION = """
mutation($n: Int!, $c: String!) { checkSku(gpuCount: $n, currency: $c) {
  __typename
  ... on CheckSkuPayload { name }
  ... on Error { message field }
  ... on SkuError { code problems { code field message } }
} }
"""


def test_success_is_the_payload() -> None:
    result = schema.execute_sync(MUTATION, {"n": 1, "c": "USD"})
    assert result.errors is None
    assert result.data == {"checkSku": {"__typename": "CheckSkuPayload", "name": "probe"}}


def test_bad_input_is_the_typed_error_with_every_problem() -> None:
    result = schema.execute_sync(MUTATION, {"n": 0, "c": "XYZ"})
    assert result.errors is None  # a refused input is data, not a GraphQL error
    error = result.data["checkSku"]  # type: ignore[index]
    assert error["__typename"] == "SkuError"
    assert (error["code"], error["field"]) == ("INVALID_GPU_COUNT", "gpuCount")
    assert [(p["code"], p["field"]) for p in error["problems"]] == [
        ("INVALID_GPU_COUNT", "gpuCount"),
        ("UNKNOWN_CURRENCY", "currency"),
    ]
