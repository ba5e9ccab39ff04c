"""Small helpers for talking GraphQL over HTTP in tests."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from domain.catalog import services
from domain.catalog.sku import SkuSpec


async def gql(client: AsyncClient, query: str, variables: dict[str, Any] | None = None,
              operation: str | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"query": query, "variables": variables or {}}
    if operation:
        body["operationName"] = operation
    response = await client.post("/graphql", json=body)
    assert response.status_code in (200, 400), response.text
    assert "Traceback" not in response.text
    return response.json()  # type: ignore[no-any-return]


async def add_skus(uow: Any, count: int, **overrides: Any) -> list[Any]:
    made = []
    for i in range(count):
        values: dict[str, Any] = {
            "name": f"sku-{i:03d}", "gpu_model": "H200", "gpu_count": 1 + i % 8, "vcpus": 8,
            "ram_gib": 64, "disk_gib": 500, "region": "eu-west", "hourly_price_minor": 100 + i,
            "currency": "USD",
        }  # fmt: skip
        values.update(overrides)
        if "name" in overrides:
            values["name"] = f"{overrides['name']}-{i}"
        made.append(await services.add_sku(uow(), SkuSpec.create(**values)))
    return made


def codes(result: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in result.get("errors", [])]
