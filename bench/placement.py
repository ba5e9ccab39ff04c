"""What placement and bootstrap cost.

1. Placement decisions per second on a fleet of `--nodes` ready nodes x 8 GPUs in PostgreSQL
   (a scratch database on DATABASE_URL's server, else an embedded one; dropped at the end).
   `--workers` concurrent tasks in a closed loop, each iteration one transaction placing a
   request (1, 2, 4 or 8 GPUs, in turn) and one releasing it, so the fleet stays about half
   full (it is half filled first, at random, so the search has real work to do):
   - baseline: lock a node row by id, insert the assignment rows for indices chosen in Python
     (the least any placement must write), then the same release;
   - placement: `reserve_gpus` (best-fit snapshot over the whole fleet, lock, fresh read,
     assign) and `release_gpus`.
   It prints decisions per second for each, per round, and the median ratio placement/baseline.
2. Node bootstrap on a loopback sshd (the test harness's, with the captured 8 x H200 report):
   `check_node` of a freshly registered node, against the same SSH commands (OS, nvidia-smi,
   facts, preparation) issued directly over one asyncssh connection in the same run. It prints
   both medians and the overhead ratio. Needs `make sshd` and root (preparation makes groups).

    .venv/bin/python -m bench.placement [--quick] [--nodes N] [--workers N] [--seconds S]
                                        [--rounds N] [--bootstraps N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import run_main
from bench.ledger import database_server
from domain.fleet.checks import check_node
from domain.fleet.node_services import change_node
from domain.fleet.nodes import NodeState, NodeTrigger
from domain.fleet.placement import GpuRequest, Placement
from domain.fleet.placement_services import release_gpus, reserve_gpus
from domain.fleet.remote import NodePrep
from domain.identity.principal import SYSTEM
from domain.retry import retrying
from infra import migrate
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.nodes.commands import OS_COMMAND, facts_command, parse_facts, parse_os, prepare_command
from infra.nodes.factory import node_layout
from infra.nodes.layout import NodeLayout
from infra.nodes.nvidia_smi import QUERY_COMMAND, parse_query_csv
from tests.support.fleet import META, fake_devices, fleet_settings, group_prefix, kit_for, register
from tests.support.servers import create_database, drop_database
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

SIZES = (1, 2, 4, 8)


async def seed_fleet(engine: AsyncEngine, nodes: int) -> None:
    """`nodes` ready H200 x 8 nodes in two regions, written set-based (setup, not timed), about
    half their GPUs assigned at random."""
    async with engine.begin() as conn:
        await conn.execute(text("""
            INSERT INTO nodes (name, host, port, ssh_user, auth, region, labels, state, health,
                               gpu_model, gpu_count, bootstrapped_at, next_probe_at)
            SELECT 'bench-' || g, 'bench-' || g || '.test', 22, 'root', 'ca',
                   CASE WHEN g % 4 = 0 THEN 'us-east' ELSE 'eu-west' END, '{}'::jsonb,
                   'ready', 'ok', 'H200', 8, now(), now() + interval '1 day'
              FROM generate_series(1, :n) g
        """), {"n": nodes})  # fmt: skip
        await conn.execute(text(r"""
            INSERT INTO node_gpus (node_id, gpu_index, uuid, model, memory_mib, driver_version,
                                   mig_enabled, pci_bus_id, present)
            SELECT n.id, i, 'GPU-bench-' || n.id || '-' || i, 'NVIDIA H200', 143771,
                   '580.159.04', false, '00000000:0' || i || '\:00.0', true
              FROM nodes n CROSS JOIN generate_series(0, 7) i
        """))  # fmt: skip
        await conn.execute(text("""
            INSERT INTO gpu_assignments (node_id, gpu_index, holder)
            SELECT node_id, gpu_index, 'seed:' || node_id || ':' || gpu_index
              FROM node_gpus WHERE random() < 0.5
        """))  # fmt: skip
        await conn.execute(text("ANALYZE"))


def _requests() -> list[GpuRequest]:
    return [GpuRequest("H200", n, "eu-west") for n in SIZES]


async def _place(engine: AsyncEngine, request: GpuRequest, holder: str) -> bool:
    async def attempt() -> bool:
        async with SqlUnitOfWork(engine) as uow:
            placed = await reserve_gpus(uow, request, holder)
            await uow.commit()
            return isinstance(placed, Placement)

    return await retrying(attempt)


async def _release(engine: AsyncEngine, holder: str) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await release_gpus(uow, holder)
        await uow.commit()


async def _baseline(engine: AsyncEngine, request: GpuRequest, holder: str,
                    node_ids: list[int]) -> bool:  # fmt: skip
    """Lock one node by id and insert its assignment rows: the floor of any placement. The
    indices are the node's first free ones, read under the lock, as a real assignment needs."""
    node_id = random.choice(node_ids)
    async with engine.begin() as conn:
        await conn.execute(text("SELECT id FROM nodes WHERE id = :id FOR UPDATE"), {"id": node_id})
        free = (await conn.execute(text("""
            SELECT g.gpu_index FROM node_gpus g
             WHERE g.node_id = :id AND g.present AND NOT EXISTS (
                   SELECT 1 FROM gpu_assignments a WHERE a.node_id = g.node_id
                      AND a.gpu_index = g.gpu_index AND a.released_at IS NULL)
             ORDER BY g.gpu_index LIMIT :n
        """), {"id": node_id, "n": request.gpu_count})).scalars().all()  # fmt: skip
        if len(free) < request.gpu_count:
            return False
        await conn.execute(
            text("INSERT INTO gpu_assignments (node_id, gpu_index, holder) "
                 "SELECT :id, unnest(CAST(:idx AS int[])), :holder"),
            {"id": node_id, "idx": list(free), "holder": holder},
        )  # fmt: skip
    return True


async def closed_loop(seconds: float, workers: int,
                      one: Callable[[int, int], Awaitable[None]]) -> float:  # fmt: skip
    """Run `one(worker, n)` back to back on `workers` tasks for `seconds`; decisions/s."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < deadline:
            await one(w, n)
            n += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return done / (time.perf_counter() - started)


async def placement_bench(admin_url: str, args: argparse.Namespace) -> list[float]:
    name, url = await asyncio.to_thread(create_database, admin_url, "gpucloud_bench_placement")
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        engine = make_engine(url, pool_size=args.workers + 2)
        try:
            seeded = time.perf_counter()
            await seed_fleet(engine, args.nodes)
            print(f"fleet: {args.nodes} nodes x 8 GPUs, ~half assigned "
                  f"(seeded in {time.perf_counter() - seeded:.1f} s)")  # fmt: skip
            async with engine.connect() as conn:
                node_ids = list((await conn.execute(text(
                    "SELECT id FROM nodes WHERE region = 'eu-west'"))).scalars())  # fmt: skip
            requests = _requests()

            async def placed(w: int, n: int) -> None:
                holder = f"bench:p:{w}:{n}"
                if await _place(engine, requests[n % len(requests)], holder):
                    await _release(engine, holder)

            async def floor(w: int, n: int) -> None:
                holder = f"bench:b:{w}:{n}"
                if await _baseline(engine, requests[n % len(requests)], holder, node_ids):
                    await _release(engine, holder)

            ratios = []
            for r in range(args.rounds):
                order = [("baseline", floor), ("placement", placed)]
                if r % 2:
                    order.reverse()
                rates: dict[str, float] = {}
                for label, one in order:
                    await closed_loop(min(1.0, args.seconds), args.workers, one)  # warm-up
                    rates[label] = await closed_loop(args.seconds, args.workers, one)
                ratio = rates["placement"] / rates["baseline"]
                ratios.append(ratio)
                print(f"round {r + 1}: baseline {rates['baseline']:.0f}/s, placement "
                      f"{rates['placement']:.0f}/s, ratio {ratio:.2f}")  # fmt: skip
            async with engine.connect() as conn:
                shared = (await conn.execute(text("""
                    SELECT count(*) FROM (SELECT node_id, gpu_index FROM gpu_assignments
                     WHERE released_at IS NULL GROUP BY 1, 2 HAVING count(*) > 1) s
                """))).scalar_one()  # fmt: skip
            assert shared == 0, f"{shared} GPUs assigned twice"
            return ratios
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(drop_database, admin_url, name)


async def _direct(node: SshNode, prep: NodePrep, layout: NodeLayout) -> float:
    """The bootstrap's SSH commands over one plain asyncssh connection: the floor."""
    started = time.perf_counter()
    known = asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {node.host_key_public}\n")
    async with asyncssh.connect(node.host, node.port, username=node.user,
                                client_keys=[str(node.client_key)], known_hosts=known,
                                agent_path=None) as conn:  # fmt: skip
        os_info = parse_os(str((await conn.run(OS_COMMAND, check=True)).stdout))
        parse_query_csv(str((await conn.run(QUERY_COMMAND, check=True)).stdout))
        parse_facts(str((await conn.run(facts_command(layout), check=True)).stdout), os_info)
        await conn.run(prepare_command(prep, layout, sudo=False), check=True)
    return time.perf_counter() - started


async def _listening(node: SshNode, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(node.host, node.port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def bootstrap_bench(admin_url: str, rounds: int) -> tuple[float, float]:
    """Median seconds of (direct commands, `check_node` of a freshly registered node)."""
    name, url = await asyncio.to_thread(create_database, admin_url, "gpucloud_bench_bootstrap")
    state = Path(tempfile.mkdtemp(prefix="gpucloud-bench-node-"))
    state.chmod(0o755)  # the isolation check opens the stand-in devices as `nobody`
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        engine = make_engine(url, pool_size=4)
        kms = LocalKms.create(state / "keys.json")
        with group_prefix() as prefix, running_node(state / "node", report=EIGHT_H200) as node:
            fake_devices(node, 8)
            settings = fleet_settings(node.root, prefix)
            kit = kit_for(lambda: SqlUnitOfWork(engine), kms, settings)
            layout = node_layout(settings)
            prep = NodePrep(settings.platform_group, list(range(8)), [])
            await _direct(node, prep, layout)  # warm-up: first connection, groups made
            await _listening(node)  # its first prepare reloaded sshd (SIGHUP: a re-exec)
            direct, platform = [], []
            for r in range(rounds):
                direct.append(await _direct(node, prep, layout))
                registered = await register(kit, node, name=f"bench-{r}")
                started = time.perf_counter()
                checked = await check_node(kit, registered.id)
                platform.append(time.perf_counter() - started)
                assert checked is not None and checked.state is NodeState.READY, checked
                # Retired, so the next round may register the same address afresh.
                await change_node(kit, checked.id, NodeTrigger.RETIRE, SYSTEM, META)
        await engine.dispose()
        return statistics.median(direct), statistics.median(platform)
    finally:
        await asyncio.to_thread(drop_database, admin_url, name)
        shutil.rmtree(state, ignore_errors=True)


async def main(args: argparse.Namespace) -> int:
    with database_server() as (admin_url, where):
        print(f"PostgreSQL: {where}; {args.workers} workers, {args.rounds} rounds of "
              f"{args.seconds:g} s")  # fmt: skip
        ratios = await placement_bench(admin_url, args)
        print(f"placement/baseline median ratio: {statistics.median(ratios):.2f}")
        if args.bootstraps:
            direct, platform = await bootstrap_bench(admin_url, args.bootstraps)
            print(f"bootstrap median: direct commands {direct * 1000:.0f} ms, check_node "
                  f"{platform * 1000:.0f} ms, overhead ratio {platform / direct:.2f}")  # fmt: skip
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run, to check it works")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bootstraps", type=int, default=10)
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.seconds, args.rounds, args.bootstraps = 200, 1.0, 1, 2
    return args


if __name__ == "__main__":
    sys.exit(run_main(main(parse(sys.argv[1:]))))
