"""The SKU entity and the rules its values must satisfy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.errors import Conflict, Problem, ProblemCollector
from domain.money import Money, is_known_currency


class SkuStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class SkuErrorCode(StrEnum):
    INVALID_NAME = "INVALID_NAME"
    INVALID_GPU_MODEL = "INVALID_GPU_MODEL"
    INVALID_GPU_COUNT = "INVALID_GPU_COUNT"
    INVALID_VCPUS = "INVALID_VCPUS"
    INVALID_RAM = "INVALID_RAM"
    INVALID_DISK = "INVALID_DISK"
    INVALID_REGION = "INVALID_REGION"
    INVALID_PRICE = "INVALID_PRICE"
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    NAME_TAKEN = "NAME_TAKEN"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ID = "INVALID_ID"
    ALREADY_RETIRED = "ALREADY_RETIRED"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GPU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_REGION = re.compile(r"^[a-z][a-z0-9-]{1,31}$")

# Bounds are generous for real hardware and keep every value inside GraphQL's 32-bit Int.
MAX_GPU_COUNT = 64
MAX_VCPUS = 4096
MAX_RAM_GIB = 1 << 20
MAX_DISK_GIB = 1 << 30
MAX_HOURLY_PRICE_MINOR = 1_000_000_000


@dataclass(frozen=True, slots=True)
class SkuSpec:
    """A validated description of a SKU to create. Build it with `SkuSpec.create`."""

    name: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    ram_gib: int
    disk_gib: int
    region: str
    hourly_price: Money

    @classmethod
    def create(
        cls,
        *,
        name: str,
        gpu_model: str,
        gpu_count: int,
        vcpus: int,
        ram_gib: int,
        disk_gib: int,
        region: str,
        hourly_price_minor: int,
        currency: str,
    ) -> SkuSpec:
        """Check every value and report all problems at once (raises `InvalidInput`)."""
        p = ProblemCollector()
        # GPU models are compared case-insensitively everywhere, so store one canonical spelling.
        name, gpu_model, region = name.strip(), gpu_model.strip().upper(), region.strip()
        currency = currency.strip().upper()
        if not _NAME.match(name):
            p.add(
                SkuErrorCode.INVALID_NAME,
                "Name must be 1-64 letters, digits, '.', '_' or '-'.",
                "name",
            )
        if not _GPU_MODEL.match(gpu_model):
            p.add(
                SkuErrorCode.INVALID_GPU_MODEL,
                "GPU model must be 1-64 letters, digits, spaces, '.', '_' or '-'.",
                "gpuModel",
            )
        _bounded(
            p, gpu_count, 1, MAX_GPU_COUNT, SkuErrorCode.INVALID_GPU_COUNT, "GPU count", "gpuCount"
        )
        _bounded(p, vcpus, 1, MAX_VCPUS, SkuErrorCode.INVALID_VCPUS, "vCPUs", "vcpus")
        _bounded(p, ram_gib, 1, MAX_RAM_GIB, SkuErrorCode.INVALID_RAM, "RAM (GiB)", "ramGib")
        _bounded(p, disk_gib, 1, MAX_DISK_GIB, SkuErrorCode.INVALID_DISK, "Disk (GiB)", "diskGib")
        if not _REGION.match(region):
            p.add(
                SkuErrorCode.INVALID_REGION,
                "Region must be 2-32 lowercase letters, digits or '-', starting with a letter.",
                "region",
            )
        _bounded(p, hourly_price_minor, 1, MAX_HOURLY_PRICE_MINOR, SkuErrorCode.INVALID_PRICE,
                 "Hourly price (minor units)", "hourlyPriceMinor")  # fmt: skip
        if not is_known_currency(currency):
            p.add(
                SkuErrorCode.UNKNOWN_CURRENCY,
                f"Unknown or unsupported currency {currency!r}.",
                "currency",
            )
        p.raise_if_any()
        return cls(
            name=name,
            gpu_model=gpu_model,
            gpu_count=gpu_count,
            vcpus=vcpus,
            ram_gib=ram_gib,
            disk_gib=disk_gib,
            region=region,
            hourly_price=Money(hourly_price_minor, currency),
        )


def _bounded(
    p: ProblemCollector, value: int, low: int, high: int, code: str, label: str, field: str
) -> None:
    # bool is an int subclass; a True here is a client bug, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        p.add(code, f"{label} must be a whole number from {low} to {high}.", field)


def name_taken(name: str) -> Conflict:
    """SKU names are unique case-insensitively; repositories raise this on a clash."""
    return Conflict(
        Problem(SkuErrorCode.NAME_TAKEN, f"A SKU named {name!r} already exists.", "name")
    )


@dataclass(frozen=True, slots=True)
class Sku:
    id: int
    name: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    ram_gib: int
    disk_gib: int
    region: str
    hourly_price: Money
    status: SkuStatus
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class SkuFilter:
    gpu_model: str | None = None
    region: str | None = None
    status: SkuStatus | None = SkuStatus.ACTIVE
