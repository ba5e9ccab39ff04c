"""One valid SKU description for every test layer; each test overrides only what it is about."""

from __future__ import annotations

from typing import Any

from domain.catalog.sku import SkuSpec

SKU_VALUES: dict[str, Any] = {
    "name": "h100x1",
    "gpu_model": "H100",
    "gpu_count": 1,
    "vcpus": 16,
    "ram_gib": 180,
    "disk_gib": 1000,
    "region": "us-east",
    "hourly_price_minor": 249,
    "currency": "USD",
}


def make_spec(name: str = "h100x1", **changes: Any) -> SkuSpec:
    return SkuSpec.create(**{**SKU_VALUES, "name": name, **changes})
