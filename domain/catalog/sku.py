"""The SKU entity and the rules its values must satisfy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

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
        _check_name(p, name)
        if not _GPU_MODEL.match(gpu_model):
            p.add(
                SkuErrorCode.INVALID_GPU_MODEL,
                "GPU model must be 1-64 letters, digits, spaces, '.', '_' or '-'.",
                "gpuModel",
            )
        _bounded(
            p, gpu_count, 1, MAX_GPU_COUNT, SkuErrorCode.INVALID_GPU_COUNT, "GPU count", "gpuCount"
        )
        _check_shape(p, vcpus, ram_gib, disk_gib)
        if not _REGION.match(region):
            p.add(
                SkuErrorCode.INVALID_REGION,
                "Region must be 2-32 lowercase letters, digits or '-', starting with a letter.",
                "region",
            )
        _check_price(p, hourly_price_minor)
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


def _check_name(p: ProblemCollector, name: str) -> None:
    if not _NAME.match(name):
        p.add(SkuErrorCode.INVALID_NAME, "Name must be 1-64 letters, digits, '.', '_' or '-'.",
              "name")  # fmt: skip


def _check_shape(
    p: ProblemCollector, vcpus: int | None, ram_gib: int | None, disk_gib: int | None
) -> None:
    """The CPU, memory and disk rules; a None (not given, in an update) is not checked."""
    if vcpus is not None:
        _bounded(p, vcpus, 1, MAX_VCPUS, SkuErrorCode.INVALID_VCPUS, "vCPUs", "vcpus")
    if ram_gib is not None:
        _bounded(p, ram_gib, 1, MAX_RAM_GIB, SkuErrorCode.INVALID_RAM, "RAM (GiB)", "ramGib")
    if disk_gib is not None:
        _bounded(p, disk_gib, 1, MAX_DISK_GIB, SkuErrorCode.INVALID_DISK, "Disk (GiB)", "diskGib")


def _check_price(p: ProblemCollector, hourly_price_minor: int) -> None:
    _bounded(p, hourly_price_minor, 1, MAX_HOURLY_PRICE_MINOR, SkuErrorCode.INVALID_PRICE,
             "Hourly price (minor units)", "hourlyPriceMinor")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SkuChanges:
    """A validated change to an existing SKU: the fields given, None for those left alone.

    Only what can change under running work may change: the name, the price (in the SKU's own
    currency) and the CPU, memory and disk that come with the GPUs. The GPU model, GPU count and
    region are what placement matched running work to, and what holds and bills were made for;
    changing them would make existing work wrong, so a different shape is a new SKU (and the
    old one retired)."""

    name: str | None = None
    hourly_price_minor: int | None = None
    vcpus: int | None = None
    ram_gib: int | None = None
    disk_gib: int | None = None

    @classmethod
    def create(
        cls, *, name: str | None = None, hourly_price_minor: int | None = None,
        vcpus: int | None = None, ram_gib: int | None = None, disk_gib: int | None = None,
    ) -> SkuChanges:  # fmt: skip
        """Check every given value by the rules of `SkuSpec.create`; report all problems."""
        p = ProblemCollector()
        if name is not None:
            name = name.strip()
            _check_name(p, name)
        _check_shape(p, vcpus, ram_gib, disk_gib)
        if hourly_price_minor is not None:
            _check_price(p, hourly_price_minor)
        p.raise_if_any()
        return cls(name=name, hourly_price_minor=hourly_price_minor, vcpus=vcpus,
                   ram_gib=ram_gib, disk_gib=disk_gib)  # fmt: skip

    def fields(self) -> dict[str, int | str]:
        """The given fields, by their API names (as audit rows show them)."""
        named = {"name": self.name, "hourlyPriceMinor": self.hourly_price_minor,
                 "vcpus": self.vcpus, "ramGib": self.ram_gib, "diskGib": self.disk_gib}  # fmt: skip
        return {key: value for key, value in named.items() if value is not None}

    def against(self, sku: Sku) -> SkuChanges:
        """Only what differs from `sku` (a name differing in case only is a change)."""
        return SkuChanges(
            name=_differs(self.name, sku.name),
            hourly_price_minor=_differs(self.hourly_price_minor, sku.hourly_price.amount_minor),
            vcpus=_differs(self.vcpus, sku.vcpus),
            ram_gib=_differs(self.ram_gib, sku.ram_gib),
            disk_gib=_differs(self.disk_gib, sku.disk_gib),
        )


def updatable(sku: Sku) -> dict[str, int | str]:
    """The fields `SkuChanges` may change, as they are on `sku`, by their API names."""
    return SkuChanges(
        name=sku.name,
        hourly_price_minor=sku.hourly_price.amount_minor,
        vcpus=sku.vcpus,
        ram_gib=sku.ram_gib,
        disk_gib=sku.disk_gib,
    ).fields()


V = TypeVar("V", int, str)


def _differs(new: V | None, old: V) -> V | None:
    return None if new is None or new == old else new


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
