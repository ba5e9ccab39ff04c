"""One metering tick over 10,000 running allocations: the batched tick (domain/compute/metering.py,
one transaction per chunk, set-based ledger writes) against the old per-allocation tick
(bench/metering_legacy.py, one transaction per allocation, the SKU read each time) in the same
run, on the same rows.

A scratch database of its own (DATABASE_URL's server, else an embedded PostgreSQL; migrated;
dropped at the end). Seeded set-based, not timed: `--wallets` funded users, 100 ready nodes,
one SKU, and `--allocations` RUNNING allocations spread over the wallets, each with an open
usage hold that reserves exactly one billing window, as `createAllocation` leaves it. So the
first tick captures the seconds since and tops up every hold (two transfers per allocation,
funds and spend limit checked per wallet); the ticks after it, within the top-up step, capture
only, as most ticks do in production.

1. Batched: the first tick, then `--repeats` ticks over all allocations with `--chunk` per
   transaction (their median is the headline, target under 1 s), then other chunk sizes, then
   two meterers at once.
2. Old: the per-allocation tick over the first `--legacy-sample` allocations (1,000 by
   default; it takes minutes over all 10,000), scaled linearly to all of them: it is one
   transaction per allocation, so its time grows with the count.
3. Checks: every hold captured exactly the cost of its allocation's billed seconds (nothing
   billed twice, nothing lost), and `verify()` is clean (exit 1 otherwise).

    .venv/bin/python -m bench.metering [--allocations N] [--wallets N] [--chunk N]
                                       [--repeats N] [--legacy-sample N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.ledger import REVENUE, client_cpu, in_scratch_database, seed, server_cpu
from bench.metering_legacy import meter_each
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.kit import AllocationPolicy, ComputeKit, usage_cost
from domain.compute.metering import CHUNK, LANES, meter
from domain.ledger import book
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import Phase, TransferCode, TransferSpec
from domain.ports import NodeOperations
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from tests.support.fleet import fleet_settings, kit_for, seed_node

PRICE = 3600  # minor units per hour: one a second
NODES = 100
POLICY = AllocationPolicy()  # a one-hour window, as in production


async def seed_allocations(engine: AsyncEngine, wallets: dict[int, int], count: int) -> list[int]:
    """`count` RUNNING allocations, each with an open hold of one window on its owner's wallet;
    their ids."""
    uow = lambda: SqlUnitOfWork(engine)  # noqa: E731
    nodes = [(await seed_node(uow(), f"gpu-{i}")).id for i in range(NODES)]
    sku = await add_sku(
        uow(),
        SkuSpec.create(
            name="h200x1",
            gpu_model="H200",
            gpu_count=1,
            vcpus=8,
            ram_gib=64,
            disk_gib=100,
            region="eu-west",
            hourly_price_minor=PRICE,
            currency="USD",
        ),
    )
    window = usage_cost(PRICE, POLICY.billing_window.total_seconds())
    users = list(wallets)
    owner = {w: u for u, w in wallets.items()}
    async with uow() as u:
        revenue = (await u.ledger.accounts([REVENUE]))[REVENUE].id
    ids: list[int] = []
    started = datetime.now(UTC)
    for start in range(0, count, 2000):
        n = min(2000, count - start)
        owners = [users[(start + i) % len(users)] for i in range(n)]
        async with uow() as u:
            conn = u.ledger._conn  # type: ignore[attr-defined]  # bulk setup only
            holds = (
                await conn.execute(
                    text("""
                INSERT INTO ledger_holds (wallet_id, counterparty_id, currency, amount, code,
                                          reference, expires_at)
                SELECT w, :revenue, 'USD', :amount, 'usage', 'bench', :expires
                  FROM unnest(CAST(:wallets AS bigint[])) WITH ORDINALITY AS o(w, n)
                 ORDER BY n
                RETURNING id, wallet_id
            """),
                    {
                        "revenue": revenue,
                        "amount": window,
                        "wallets": [wallets[o] for o in owners],
                        "expires": started + POLICY.billing_window + POLICY.hold_slack,
                    },
                )
            ).all()
            await book.post(
                u.ledger,
                [
                    TransferSpec(
                        debit=h.wallet_id,
                        credit=revenue,
                        amount=window,
                        currency="USD",
                        code=TransferCode.USAGE,
                        phase=Phase.PENDING,
                        hold_id=h.id,
                    )
                    for h in holds
                ],
            )
            rows = await conn.execute(
                text("""
                INSERT INTO allocations (user_id, sku_id, hourly_price_minor, currency, state,
                                         version, node_id, gpu_indices, hold_id, running_since,
                                         billed_until)
                SELECT o, :sku, :price, 'USD', 'running', 4,
                       (CAST(:nodes AS bigint[]))[1 + (n - 1) % :node_count],
                       ARRAY[((n - 1) % 8)::int], h, :started, :started
                  FROM unnest(CAST(:owners AS bigint[]), CAST(:holds AS bigint[]))
                       WITH ORDINALITY AS d(o, h, n)
                RETURNING id
            """),
                {
                    "sku": sku.id,
                    "price": PRICE,
                    "nodes": nodes,
                    "node_count": len(nodes),
                    "owners": [owner[h.wallet_id] for h in holds],
                    "holds": [h.id for h in holds],
                    "started": started,
                },
            )
            ids += list(rows.scalars())
            await u.commit()
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    return sorted(ids)


def compute_kit(engine: AsyncEngine, root: Path) -> ComputeKit:
    """What metering needs: units of work, the fleet's policy (for unreachable nodes) and the
    policies; it sends nothing to nodes, so there are no node operations."""
    uow = lambda: SqlUnitOfWork(engine)  # noqa: E731
    fleet = kit_for(uow, LocalKms.create(root / "keys.json"), fleet_settings(root, "gpbm"))
    return ComputeKit(
        uow=uow, fleet=fleet, ops=cast(NodeOperations, None), ledger=LedgerPolicy(), policy=POLICY
    )


async def timed(label: str, work: Any, database: str) -> tuple[float, Any]:
    c0, s0 = client_cpu(), server_cpu(database)
    started = time.perf_counter()
    result = await work
    elapsed = time.perf_counter() - started
    c1, s1 = client_cpu(), server_cpu(database)
    server = "n/a" if s0 is None or s1 is None else f"{s1 - s0:.2f} s"
    print(f"  {label}: {elapsed:.2f} s (client CPU {c1 - c0:.2f} s, server CPU {server})")
    return elapsed, result


async def check(engine: AsyncEngine) -> list[str]:
    """Each hold captured the cost of its allocation's billed seconds, and the ledger verifies."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("""
            SELECT a.id, a.billable_seconds, a.hourly_price_minor, h.captured
              FROM allocations a JOIN ledger_holds h ON h.id = a.hold_id
        """)
            )
        ).all()
    wrong = [
        r.id for r in rows if usage_cost(r.hourly_price_minor, r.billable_seconds) != r.captured
    ]
    async with SqlUnitOfWork(engine) as u:
        verified = await u.ledger.verify()
    problems = [f"allocation {i}: captured is not the cost of its billed time" for i in wrong[:5]]
    return problems + verified.problems[:5]


async def run(url: str, server: str, args: argparse.Namespace) -> int:
    engine = make_engine(url, pool_size=8)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"metering bench: {server}, PostgreSQL {version}, {os.cpu_count()} cores shared by "
            f"PostgreSQL and this process; load average {load}"
        )
        started = time.perf_counter()
        wallets = await seed(engine, args.wallets)
        ids = await seed_allocations(engine, wallets, args.allocations)
        print(
            f"seeded {len(ids)} RUNNING allocations with open one-window holds on "
            f"{len(wallets)} wallets and {NODES} nodes in {time.perf_counter() - started:.1f} s"
        )
        with tempfile.TemporaryDirectory() as root:
            kit = compute_kit(engine, Path(root))
            await asyncio.sleep(1)  # so the first tick has a second to bill

            print(
                f"\n1. batched tick: {args.chunk} allocations per transaction, "
                f"{args.lanes} at a time"
            )
            work = meter(kit, args.chunk, args.lanes)
            _, totals = await timed("first tick (tops up every hold)", work, args.database)
            assert totals.metered == len(ids), totals
            headline: list[float] = []
            for n in range(args.repeats):
                seconds, totals = await timed(
                    f"tick {n + 2}", meter(kit, args.chunk, args.lanes), args.database
                )
                assert totals.metered == len(ids), totals
                headline.append(seconds)
            best = statistics.median(headline)
            for chunk, lanes in args.others:
                work = meter(kit, chunk, lanes)
                await timed(f"chunk {chunk}, {lanes} at a time", work, args.database)
            both = asyncio.gather(meter(kit, args.chunk, 1), meter(kit, args.chunk, 1))
            _, split = await timed("two meterers at once (1 lane each)", both, args.database)
            print(f"    they billed {split[0].metered} + {split[1].metered} allocations")

            sample = ids[: args.legacy_sample]
            print(f"\n2. old tick: one transaction per allocation, over {len(sample)} allocations")
            old, _ = await timed("old tick", meter_each(kit, sample), args.database)
            scaled = old * len(ids) / len(sample)
            if len(sample) < len(ids):
                print(f"  scaled to {len(ids)}: {scaled:.2f} s")
            print(
                f"\n  {len(ids)} allocations: batched {best:.2f} s (median of {len(headline)}), "
                f"old {scaled:.2f} s: {scaled / best:.1f}x faster; "
                f"target under 1 s: {'met' if best < 1 else 'NOT met'}"
            )

        problems = await check(engine)
        print(f"\n3. checks: {problems or 'clean'}")
        return 0 if not problems else 1
    finally:
        await engine.dispose()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--allocations", type=int, default=10_000)
    parser.add_argument("--wallets", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=CHUNK, help="allocations per transaction")
    parser.add_argument("--lanes", type=int, default=LANES, help="chunks billed at once")
    parser.add_argument("--repeats", type=int, default=5, help="ticks after the first timed")
    parser.add_argument(
        "--legacy-sample",
        type=int,
        default=1000,
        help="allocations the old tick bills (then scaled)",
    )
    args = parser.parse_args(argv)
    shapes = [(c, n) for c in (250, 500, 1000, 2000) for n in (1, 2)]
    args.others = [s for s in shapes if s != (args.chunk, args.lanes)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return in_scratch_database("gpucloud_bench_metering", parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
