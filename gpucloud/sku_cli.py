"""`gpucloud sku add|list|retire|seed-demo`: manage the catalog from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from domain.catalog import services
from domain.catalog.sku import Sku, SkuErrorCode, SkuFilter, SkuSpec, SkuStatus
from domain.errors import DomainError, NotFound, Problem
from domain.pagination import MAX_PAGE_SIZE, PageRequest, parse_key
from gpucloud.config import run_with_uow
from infra.db.uow import SqlUnitOfWork

T = TypeVar("T")

# GraphQL field names in domain problems -> the flag the CLI user typed.
_FLAGS = {
    "name": "--name", "gpuModel": "--gpu-model", "gpuCount": "--gpu-count", "vcpus": "--vcpus",
    "ramGib": "--ram-gib", "diskGib": "--disk-gib", "region": "--region",
    "hourlyPriceMinor": "--price-minor", "currency": "--currency", "id": "SKU",
}  # fmt: skip


def _fail(exc: DomainError) -> int:
    for p in exc.problems:
        where = f"{_FLAGS.get(p.field, p.field)}: " if p.field else ""
        print(f"gpucloud sku: error: {where}{p.message} [{p.code}]", file=sys.stderr)
    return 2


def _row(sku: Sku) -> str:
    price = sku.hourly_price
    return (f"{sku.id:>5}  {sku.name:<20} {sku.gpu_count}x {sku.gpu_model:<10} {sku.vcpus:>4} vCPU "
            f"{sku.ram_gib:>6} GiB {sku.disk_gib:>7} GiB  {sku.region:<12} "
            f"{price.as_decimal()} {price.currency}/h  {sku.status.value}")  # fmt: skip


def cmd_add(args: argparse.Namespace) -> int:
    try:
        spec = SkuSpec.create(
            name=args.name, gpu_model=args.gpu_model, gpu_count=args.gpu_count, vcpus=args.vcpus,
            ram_gib=args.ram_gib, disk_gib=args.disk_gib, region=args.region,
            hourly_price_minor=args.price_minor, currency=args.currency,
        )  # fmt: skip
        sku = run_with_uow(lambda uow: services.add_sku(uow(), spec))
    except DomainError as exc:
        return _fail(exc)
    print(_row(sku))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    sku_filter = SkuFilter(
        gpu_model=args.gpu_model, region=args.region, status=None if args.all else SkuStatus.ACTIVE
    )

    async def collect(uow: Callable[[], SqlUnitOfWork]) -> list[Sku]:
        found: list[Sku] = []
        after: int | None = None
        while True:
            page = await services.list_skus(uow(), sku_filter, PageRequest(MAX_PAGE_SIZE, after))
            found.extend(item for _, item in page.items)
            if not page.has_next_page:
                return found
            after = page.items[-1][0]

    for sku in run_with_uow(collect):
        print(_row(sku))
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    async def retire(uow: Callable[[], SqlUnitOfWork]) -> Sku:
        sku_id = parse_key(args.sku)
        if sku_id is None:  # not an id: a name
            found = await services.get_sku_by_name(uow(), args.sku)
            if found is None:
                raise NotFound(Problem(SkuErrorCode.NOT_FOUND, f"No SKU named {args.sku!r}.", "id"))
            sku_id = found.id
        return await services.retire_sku(uow(), sku_id)

    try:
        sku = run_with_uow(retire)
    except DomainError as exc:
        return _fail(exc)
    print(_row(sku))
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    added = run_with_uow(lambda uow: services.seed_demo_skus(uow()))
    print(f"seeded {len(added)} demo SKUs" if added else "catalog not empty; nothing seeded")
    return 0


def add_parser(sub: Any) -> None:
    sku = sub.add_parser(
        "sku", help="manage the SKU catalog", description="Manage the SKU catalog."
    )
    verbs = sku.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="add a SKU", description="Add a SKU to the catalog.")
    add.add_argument("--name", required=True, help="unique name, e.g. h200x8")
    add.add_argument("--gpu-model", required=True, help="GPU model, e.g. H200")
    add.add_argument("--gpu-count", required=True, type=int, help="GPUs per allocation")
    add.add_argument("--vcpus", required=True, type=int, help="virtual CPUs")
    add.add_argument("--ram-gib", required=True, type=int, help="memory in GiB")
    add.add_argument("--disk-gib", required=True, type=int, help="disk in GiB")
    add.add_argument("--region", required=True, help="region slug, e.g. eu-west")
    add.add_argument(
        "--price-minor", required=True, type=int, help="hourly price in minor units (cents)"
    )
    add.add_argument("--currency", required=True, help="ISO 4217 code, e.g. USD")
    add.set_defaults(func=cmd_add)

    lst = verbs.add_parser(
        "list", help="list SKUs", description="List SKUs (active ones unless --all)."
    )
    lst.add_argument("--gpu-model", help="only this GPU model")
    lst.add_argument("--region", help="only this region")
    lst.add_argument("--all", action="store_true", help="include retired SKUs")
    lst.set_defaults(func=cmd_list)

    ret = verbs.add_parser(
        "retire", help="retire a SKU", description="Retire a SKU: no new orders."
    )
    ret.add_argument("sku", metavar="SKU", help="SKU id or name")
    ret.set_defaults(func=cmd_retire)

    seed = verbs.add_parser("seed-demo", help="add demo SKUs if the catalog is empty",
                            description="Add a few demo SKUs when the catalog is empty.")  # fmt: skip
    seed.set_defaults(func=cmd_seed_demo)
