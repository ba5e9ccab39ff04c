"""Catalog types: what a SKU looks like to clients."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from domain.catalog.sku import Sku as DomainSku
from domain.money import Money as DomainMoney
from schema.errors import SkuError
from schema.relay import Connection, Node, to_global_id


# Computed only when selected: a page of prices would otherwise build a Decimal per row.
def _exponent(root: Money) -> int:
    return root.domain.exponent


def _amount(root: Money) -> Decimal:
    return root.domain.as_decimal()


@strawberry.type(description="An amount in integer minor units of an ISO 4217 currency.")
class Money:
    amount_minor: int = strawberry.field(description="Integer minor units, e.g. cents.")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")
    domain: strawberry.Private[DomainMoney]
    exponent: int = strawberry.field(
        resolver=_exponent, description="Minor units per major unit, as a power of 10."
    )
    amount: Decimal = strawberry.field(
        resolver=_amount, description="The exact amount in major units."
    )

    @classmethod
    def from_domain(cls, money: DomainMoney) -> Money:
        return cls(amount_minor=money.amount_minor, currency=money.currency, domain=money)


@strawberry.enum(description="Whether a SKU can still be ordered.")
class SkuStatus(Enum):
    ACTIVE = "active"
    RETIRED = "retired"


async def _available(root: Sku, info: strawberry.Info) -> int:
    found: int = await info.context.loaders.sku_available.load(root.domain)
    return found


@strawberry.type(
    description="A sellable GPU shape: model and count, with CPU, memory, disk and price."
)
class Sku(Node):
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
    domain: strawberry.Private[DomainSku]
    available: int = strawberry.field(
        resolver=_available,
        description="How many more of this SKU could be placed now: whole SKUs' worth of free "
        "GPUs on ready nodes of its region and GPU model, summed over those nodes (0 for a "
        "retired SKU). Read live, one query for a whole page; a snapshot, not a reservation.",
    )

    @classmethod
    def from_domain(cls, sku: DomainSku) -> Sku:
        return cls(
            domain=sku,
            id=to_global_id("Sku", sku.id),
            name=sku.name,
            gpu_model=sku.gpu_model,
            gpu_count=sku.gpu_count,
            vcpus=sku.vcpus,
            ram_gib=sku.ram_gib,
            disk_gib=sku.disk_gib,
            region=sku.region,
            hourly_price=Money.from_domain(sku.hourly_price),
            status=SkuStatus(sku.status.value),
            created_at=sku.created_at,
            retired_at=sku.retired_at,
        )


SkuConnection = Connection[Sku]


@strawberry.input(description="Narrow the catalog; every given field must match.")
class SkuFilter:
    gpu_model: str | None = None
    region: str | None = None
    status: SkuStatus | None = strawberry.field(
        default=SkuStatus.ACTIVE, description="Defaults to ACTIVE; null lists every status."
    )


@strawberry.enum
class CatalogChangeKind(Enum):
    ADDED = "added"
    RETIRED = "retired"
    UPDATED = "updated"


@strawberry.type(description="A change to the catalog, delivered live.")
class CatalogChange:
    kind: CatalogChangeKind
    sku: Sku | None = strawberry.field(description="The SKU as it is now; null if it is gone.")


@strawberry.input(description="A new SKU; every field is validated and all problems reported.")
class CreateSkuInput:
    name: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    ram_gib: int
    disk_gib: int
    region: str
    hourly_price_minor: int = strawberry.field(description="Integer minor units, e.g. cents.")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")


@strawberry.input(
    description="A change to a SKU: only the fields given change, each checked by the rules of "
    "createSku. The GPU model, GPU count, region and currency cannot change: placement matched "
    "running work to them and holds and bills were made for them; a different shape is a new "
    "SKU (retire the old one)."
)
class UpdateSkuInput:
    name: str | None = None
    hourly_price_minor: int | None = strawberry.field(
        default=None, description="Integer minor units of the SKU's currency."
    )
    vcpus: int | None = None
    ram_gib: int | None = None
    disk_gib: int | None = None


@strawberry.type
class SkuPayload:
    sku: Sku


SkuResult = Annotated[SkuPayload | SkuError, strawberry.union("SkuResult")]
