"""What provisioning costs on loopback sshd (needs root and `make sshd`: it makes real users).

1. Latency: `--allocations` times, one after another on one node: `create_allocation` (GPUs
   placed, hold opened) then the engine's `advance` to RUNNING, timed end to end; then stopped
   and torn down (not timed). Baseline in the same run: the same account script sent directly
   over one open asyncssh connection, for a fresh user each time (then removed). Prints p50/p99
   of both and the platform's overhead at p50 (target: under 100 ms). Then the same through a
   real `gpucloud worker` at the default 1 s engine tick: create, and RUNNING seen in the
   database (the commit wakes the worker; without the wake-up this waits for the next tick).
2. Throughput: `--burst` allocations created at once across `--nodes` sshd nodes (20 GPUs each,
   stand-in device files), provisioned by `--workers` real `gpucloud worker` processes; the time
   until all are RUNNING, as allocations per second.

Everything lives in a scratch database and a random user prefix, removed at the end.

    .venv/bin/python -m bench.provisioning [--quick] [--allocations N] [--burst N]
                                           [--nodes N] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import psutil

from bench.common import run_main
from bench.ledger import database_server
from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.accounts import AccountSpec, account_name
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.engine import advance
from domain.compute.kit import ComputeKit
from domain.fleet.ca_services import create_ca
from domain.fleet.checks import check_node
from domain.fleet.remote import NodePrep, NodeTarget
from domain.fleet.targets import node_target
from domain.identity.principal import Principal
from domain.ledger.policy import LedgerPolicy
from domain.ports import UnitOfWork
from infra import migrate
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.nodes.account_commands import ensure_account_command, remove_account_command
from infra.nodes.factory import make_compute_kit, node_layout
from infra.nodes.layout import NodeLayout
from infra.nodes.nvidia_smi import parse_query_csv
from infra.nodes.ssh import SshDialer
from infra.nodes.ssh_ca import AsyncsshCaSigner
from infra.settings import load_settings
from tests.support.accounts import open_node_root, remove_users
from tests.support.compute import customer
from tests.support.fleet import fleet_settings, group_prefix, kit_for, register
from tests.support.processes import Process
from tests.support.servers import create_database, drop_database
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node

META = RequestMeta(request_id="bench")
GPUS_PER_NODE = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _world(uow: Callable[[], UnitOfWork], kit: ComputeKit, nodes: list[SshNode],
                 prefix: str) -> tuple[Principal, int, int]:  # fmt: skip
    """Ready nodes, a 1-GPU SKU, a funded user with a key: (user, sku id, key id)."""
    for i, node in enumerate(nodes):
        registered = await register(kit.fleet, node, name=f"bench-{i}")
        checked = await check_node(kit.fleet, registered.id)
        assert checked is not None and checked.gpu_count == 8, checked
        async with uow() as u:  # 20 stand-in GPUs per node instead of the 8 reported
            template = parse_query_csv(EIGHT_H200["query"].read_text())[0]
            await u.nodes.record_gpus(registered.id, [
                replace(template, index=g, uuid=f"GPU-bench-{i}-{g}")
                for g in range(GPUS_PER_NODE)])  # fmt: skip
            await u.commit()
    sku = await add_sku(uow(), SkuSpec.create(
        name="h200x1", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=399, currency="USD"))  # fmt: skip
    user, key_id = await customer(uow, f"{prefix}@bench.test")
    return user, sku.id, key_id


async def latency(kit: ComputeKit, layout: NodeLayout, user: Principal, sku_id: int,
                  key_id: int, count: int) -> tuple[list[float], list[float]]:  # fmt: skip
    """Seconds from create to RUNNING through the platform, and for the same account script
    sent directly over one open connection (as the platform's pool keeps one)."""
    platform_s: list[float] = []
    for n in range(count):
        started = time.perf_counter()
        placed = await create_allocation(kit, user, sku_id, [key_id], f"lat-{n}", META)
        running = await advance(kit, placed.id)
        platform_s.append(time.perf_counter() - started)
        assert running is not None and running.state.value == "running", running
        await stop_allocation(kit, user, placed.id, META)
        await advance(kit, placed.id)
        node_id = placed.node_id
    async with kit.uow() as u:
        node = await u.nodes.get(node_id)
        assert node is not None
        target = await node_target(kit.fleet, u, node, "bench")
        keys = [k.public_key for k in await u.ssh_keys.all_for(user.user_id or 0)]
    conn, _ = await SshDialer(None).connect(target)
    prefix = kit.policy.user_prefix
    direct_s: list[float] = []
    async with conn:
        for n in range(count):
            name = account_name(prefix, 1_000_000 + n)
            command = ensure_account_command(AccountSpec(name, keys, (0,)), 1, prefix=prefix,
                                             platform_group=kit.fleet.platform_group,
                                             layout=layout, sudo=False)  # fmt: skip
            started = time.perf_counter()
            done = await conn.run(command)
            direct_s.append(time.perf_counter() - started)
            assert done.exit_status == 0, done.stderr
            await conn.run(
                remove_account_command(
                    name, 1, prefix=prefix, keep_home=False, layout=layout, sudo=False
                )
            )
    return platform_s, direct_s


async def worker_latency(
    kit: ComputeKit,
    user: Principal,
    sku_id: int,
    key_id: int,
    count: int,
    env: dict[str, str],
    logs: Path,
) -> list[float]:
    """Seconds from create to RUNNING seen in the database, one allocation after another,
    provisioned by one real `gpucloud worker` at the default 1 s engine tick: the commit wakes
    its Dispatcher (LISTEN/NOTIFY), so the poll interval is not in the figure."""
    proc = Process(
        ["worker"], {**env, "GPUCLOUD_ENGINE_TICK_SECONDS": "1"}, logs / "worker-lat.log"
    )
    seconds: list[float] = []
    try:
        for n in range(count + 1):  # the first one (untimed) waits for the worker to start
            started = time.perf_counter()
            placed = await create_allocation(kit, user, sku_id, [key_id], f"wlat-{n}", META)
            await _until_state(kit, placed.id, "running")
            if n:
                seconds.append(time.perf_counter() - started)
            await stop_allocation(kit, user, placed.id, META)
            await _until_state(kit, placed.id, "stopped")
    finally:
        proc.stop()
    return seconds


async def _until_state(kit: ComputeKit, allocation_id: int, state: str) -> None:
    """Wait, reading it every 2 ms, until the allocation is in `state` (60 s at most)."""
    deadline = time.perf_counter() + 60
    while True:
        async with kit.uow() as u:
            found = await u.allocations.get(allocation_id)
        if found is not None and found.state.value == state:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"allocation {allocation_id} not {state} within 60 s")
        await asyncio.sleep(0.002)


async def throughput(kit: ComputeKit, user: Principal, sku_id: int, key_id: int, burst: int,
                     workers: int, env: dict[str, str], logs: Path) -> float:  # fmt: skip
    """Allocations per second: `burst` created at once, provisioned by `workers` processes."""
    ids = [(await create_allocation(kit, user, sku_id, [key_id], f"burst-{n}", META)).id
           for n in range(burst)]  # fmt: skip
    started = time.perf_counter()
    procs = [Process(["worker"], env, logs / f"worker-{w}.log") for w in range(workers)]
    try:
        while True:
            async with kit.uow() as u:
                found = await u.allocations.get_many(ids)
            states = [a.state.value for a in found.values()]
            if all(state == "running" for state in states):
                rate = burst / (time.perf_counter() - started)
                cpu = sum(sum(psutil.Process(p.proc.pid).cpu_times()[:2]) for p in procs)
                print(
                    f"workers' CPU per allocation (their start-up included): "
                    f"{cpu / burst * 1000:.0f} ms"
                )
                return rate
            if any(state in ("failed", "stopping") for state in states):
                raise RuntimeError(f"allocations failed: {states}; see {logs}")
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"not all running after 600 s; see {logs}")
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            proc.stop()


def _worker_env(
    url: str, key_file: Path, root: Path, groups: str, prefix: str, threads: int, poll_ms: int
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")},
        "DATABASE_URL": url, "REDIS_URL": os.environ.get("REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"),
        "GPUCLOUD_REDIS_NAMESPACE": f"gpucloud_bench_{secrets.token_hex(3)}",
        "GPUCLOUD_KMS_KEY_FILE": str(key_file), "GPUCLOUD_LOG_LEVEL": "warning",
        "GPUCLOUD_NODE_TRUSTED_CA_FILE": str(root / "trusted_ca_keys"),
        "GPUCLOUD_NODE_SSHD_DROPIN": "none", "GPUCLOUD_NODE_UDEV_RULES": "none",
        "GPUCLOUD_NODE_NVIDIA_MODPROBE": "none",
        "GPUCLOUD_NODE_DEVICE_DIR": str(root / "dev"), "GPUCLOUD_NODE_DATA_DIR": str(root),
        "GPUCLOUD_NODE_HOME_DIR": str(root / "home"),
        "GPUCLOUD_NODE_GPU_GROUP_PREFIX": f"{groups}g",
        "GPUCLOUD_NODE_PLATFORM_GROUP": f"{groups}p", "GPUCLOUD_ALLOCATION_USER_PREFIX": prefix,
        "GPUCLOUD_ENGINE_TICK_SECONDS": "0.05", "GPUCLOUD_WORKER_THREADS": str(threads),
        "GPUCLOUD_WORKER_POLL_MS": str(poll_ms),
        "GPUCLOUD_PROBE_INTERVAL_SECONDS": "3600", "GPUCLOUD_MIN_DISK_FREE_MIB": "1",
        # Every "node" here is this one machine, so each would see the others' accounts as
        # orphans: the reconciler stays out of this run (its tests use one node).
        "GPUCLOUD_RECONCILE_NODES_SECONDS": "86400",
    }  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    with database_server() as (admin_url, where), ExitStack() as stack:
        name, url = await asyncio.to_thread(create_database, admin_url, "gpucloud_bench_prov")
        state = Path(tempfile.mkdtemp(prefix="gpucloud-bench-prov-"))
        prefix = "b" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4))
        engine = None
        try:
            await asyncio.to_thread(migrate.upgrade, url)
            engine = make_engine(url, pool_size=8)
            uow: Callable[[], UnitOfWork] = lambda: SqlUnitOfWork(engine)  # noqa: E731
            root = stack.enter_context(open_node_root())
            groups = stack.enter_context(group_prefix())
            key_file = state / "keys.json"
            kms = LocalKms.create(key_file)
            # Each node's sshd trusts the CA from the start (its own config names its own CA
            # file), so bootstrap's certificate login works without a shared drop-in.
            ca = await create_ca(uow(), kms, AesGcmCipher(), AsyncsshCaSigner())
            nodes = [stack.enter_context(running_node(root / f"sshd-{i}", report=EIGHT_H200,
                                                      trusted_ca_keys=[ca.public_key]))
                     for i in range(args.nodes)]  # fmt: skip
            (root / "dev").mkdir()
            for index in range(GPUS_PER_NODE):  # every "node" is this machine: one set
                (root / "dev" / f"nvidia{index}").touch(mode=0o666)
            # Probes once an hour: a probe would find the 8 GPUs nvidia-smi reports, not the
            # 20 recorded below, and take the node out of placement mid-run.
            fleet = replace(
                fleet_settings(root, groups),
                min_disk_free_mib=1,
                probe_interval_seconds=3600,
                trusted_ca_file=str(root / "trusted_ca_keys"),
                sshd_dropin="",
            )
            fleet_kit = kit_for(uow, kms, fleet)
            settings = load_settings({"GPUCLOUD_ALLOCATION_USER_PREFIX": prefix}, needs=())
            kit = make_compute_kit(fleet, settings.compute, fleet_kit,
                                   LedgerPolicy(default_hourly_spend_limit=10**12))  # fmt: skip
            user, sku_id, key_id = await _world(uow, kit, nodes, prefix)
            async with kit.fleet.connector.session(await _target(kit)) as session:
                await session.prepare(
                    NodePrep(fleet.platform_group, list(range(GPUS_PER_NODE)), [])
                )
            print(f"PostgreSQL: {where}; {args.nodes} sshd nodes x {GPUS_PER_NODE} GPUs")
            platform_s, direct_s = await latency(kit, node_layout(fleet), user, sku_id, key_id,
                                                 args.allocations)  # fmt: skip
            p50, d50 = statistics.median(platform_s), statistics.median(direct_s)
            print(f"create -> running, {args.allocations} allocations: p50 {p50 * 1000:.0f} ms, "
                  f"p99 {percentile(platform_s, 0.99) * 1000:.0f} ms")  # fmt: skip
            print(f"same script sent directly: p50 {d50 * 1000:.0f} ms, "
                  f"p99 {percentile(direct_s, 0.99) * 1000:.0f} ms")  # fmt: skip
            print(f"platform overhead at p50: {(p50 - d50) * 1000:.0f} ms (target < 100 ms)")
            await kit.ops.aclose()  # type: ignore[attr-defined]
            env = _worker_env(url, key_file, root, groups, prefix, threads=4, poll_ms=args.poll_ms)
            worker_s = await worker_latency(kit, user, sku_id, key_id, args.allocations, env, state)
            w50 = statistics.median(worker_s)
            print(
                f"create -> running through a worker (1 s tick, woken on commit): "
                f"p50 {w50 * 1000:.0f} ms, p99 {percentile(worker_s, 0.99) * 1000:.0f} ms; "
                f"overhead at p50 {(w50 - d50) * 1000:.0f} ms"
            )
            rate = await throughput(kit, user, sku_id, key_id, args.burst, args.workers, env,
                                    state)  # fmt: skip
            print(f"{args.burst} allocations across {args.nodes} nodes, {args.workers} workers: "
                  f"{rate:.1f} allocations/s ({args.burst / rate:.1f} s)")  # fmt: skip
        finally:
            if engine is not None:
                await engine.dispose()
            remove_users(prefix)
            await asyncio.to_thread(drop_database, admin_url, name)
            shutil.rmtree(state, ignore_errors=True)
    return 0


async def _target(kit: ComputeKit) -> NodeTarget:
    async with kit.uow() as u:
        node = await u.nodes.get(1)
        assert node is not None
        return await node_target(kit.fleet, u, node, "bench")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run, to check it works")
    p.add_argument("--allocations", type=int, default=50)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument(
        "--poll-ms",
        type=int,
        default=50,
        help="GPUCLOUD_WORKER_POLL_MS: how often an idle actor consumer asks Redis",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.allocations, args.burst, args.nodes, args.workers = 5, 20, 2, 2
    return args


if __name__ == "__main__":
    sys.exit(run_main(main(parse(sys.argv[1:]))))
