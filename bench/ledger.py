"""What the ledger costs: committed transfers per second against plain single-row INSERT commits,
and the time to capture one metering tick on 10,000 open holds.

A scratch database of its own (created on the server named by DATABASE_URL, else on an embedded
PostgreSQL reached by unix socket; migrated with `infra.migrate`; dropped at the end whatever
happens). It creates `--wallets` users with a USD wallet each, funded in one transfer.

1. Throughput. `--workers` concurrent tasks, one shared engine (pool workers + 4), closed loop:
   - baseline: `async with engine.begin()`: one `INSERT INTO bench_inserts` row, commit;
   - ledger: `SqlUnitOfWork` + `book.move(wallet -> compute_revenue, 1, usage)` on a random
     wallet, commit, retried on contention as the use cases do.
   Rounds alternate the order; each target gets a warm-up then `--seconds` measured. It prints
   commits per second, the per-round ratio ledger/baseline and their median (target >= 0.3).
2. Metering tick. `--holds` open usage holds (spread over the wallets), then one tick:
   `book.act_many(Capture(1))` over every hold, `--chunk` holds per transaction, one transaction
   after another (target: the whole tick under 5 s). Also other chunk sizes, for the shape.
3. `verify()` over everything written must be clean (exit 1 otherwise).

    .venv/bin/python -m bench.ledger [--quick] [--wallets N] [--workers N] [--seconds S]
                                     [--rounds N] [--holds N] [--chunk N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import run_main
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.holds import Capture
from domain.ledger.transfers import Phase, TransferCode, TransferSpec
from domain.retry import retrying
from infra import migrate
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from tests.support.servers import create_database, drop_database

PROMO = platform(AccountKind.PROMOTIONAL_CREDIT, "USD")
REVENUE = platform(AccountKind.COMPUTE_REVENUE, "USD")
FUNDS = 10**12  # per wallet: never the limit here
HOLD_AMOUNT = 1_000_000


@contextlib.contextmanager
def database_server() -> Iterator[tuple[str, str]]:
    """(admin URL, description): DATABASE_URL's server, else an embedded one for this run."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, "DATABASE_URL"
        return
    from infra.embedded.postgres import EmbeddedPostgres

    state = Path(tempfile.mkdtemp(prefix="gpucloud-bench-"))
    state.chmod(0o755)  # pgserver runs postgres as its own user when we are root
    pg = EmbeddedPostgres(state / "pg")
    try:
        yield pg.start(), "embedded PostgreSQL (unix socket)"
    finally:
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)


# -- setup ------------------------------------------------------------------------------------


async def seed(engine: AsyncEngine, wallets: int) -> dict[int, int]:
    """`wallets` users, each with a funded USD wallet: user id -> wallet account id."""
    async with engine.begin() as conn:
        rows = await conn.execute(text("""
            INSERT INTO users (email)
            SELECT 'bench-' || g || '@example.com' FROM generate_series(1, :n) g RETURNING id
        """), {"n": wallets})  # fmt: skip
        user_ids = list(rows.scalars())
        await conn.execute(text("""
            CREATE TABLE bench_inserts (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                wallet_id bigint NOT NULL, amount bigint NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now())
        """))  # fmt: skip
    async with SqlUnitOfWork(engine) as u:
        keys = [wallet(uid, "USD") for uid in user_ids]
        found = await u.ledger.accounts([*keys, PROMO, REVENUE])
        await book.post(u.ledger, [
            TransferSpec(debit=found[PROMO].id, credit=found[k].id, amount=FUNDS, currency="USD",
                         code=TransferCode.CREDIT)
            for k in keys
        ])  # fmt: skip
        await u.commit()
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    return {uid: found[wallet(uid, "USD")].id for uid in user_ids}


async def open_holds(engine: AsyncEngine, wallet_ids: Sequence[int], count: int) -> list[int]:
    """`count` open usage holds spread over the wallets, written set-based (setup, not timed)."""
    async with SqlUnitOfWork(engine) as u:
        revenue = (await u.ledger.accounts([REVENUE]))[REVENUE].id
    ids: list[int] = []
    for start in range(0, count, 2000):
        n = min(2000, count - start)
        owners = [wallet_ids[(start + i) % len(wallet_ids)] for i in range(n)]
        async with SqlUnitOfWork(engine) as u:
            conn = u.ledger._conn  # type: ignore[attr-defined]  # bulk setup only
            rows = await conn.execute(text("""
                INSERT INTO ledger_holds (wallet_id, counterparty_id, currency, amount, code,
                                          reference, expires_at)
                SELECT w, :revenue, 'USD', :amount, 'usage', 'bench:' || w, now() + interval '1 day'
                  FROM unnest(CAST(:wallets AS bigint[])) AS w
                RETURNING id, wallet_id
            """), {"revenue": revenue, "amount": HOLD_AMOUNT, "wallets": owners})  # fmt: skip
            made = rows.all()
            await book.post(u.ledger, [
                TransferSpec(debit=r.wallet_id, credit=revenue, amount=HOLD_AMOUNT,
                             currency="USD", code=TransferCode.USAGE, phase=Phase.PENDING,
                             hold_id=r.id)
                for r in made
            ])  # fmt: skip
            await u.commit()
        ids += [r.id for r in made]
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    return ids


# -- throughput -------------------------------------------------------------------------------


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(database: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends serving `database` (None when the
    server's processes cannot be seen from here)."""
    try:
        import psutil
    except ImportError:
        return None
    total, seen = 0.0, False
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(database in part for part in proc.info["cmdline"] or ()):
                times = proc.cpu_times()
                total += times.user + times.system
                seen = True
    return total if seen else None


@dataclass
class Sample:
    ops: int = 0
    seconds: float = 0.0
    client: float = 0.0  # CPU seconds of this process
    server: float | None = 0.0  # CPU seconds of the database's backends

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def per_op(self, cpu: float | None) -> str:
        return "   n/a" if cpu is None else f"{1000 * cpu / self.ops:6.2f}"


async def measure(op: Callable[[random.Random], Awaitable[None]], workers: int, seconds: float,
                  database: str) -> Sample:  # fmt: skip
    c0, s0 = client_cpu(), server_cpu(database)
    ops, elapsed = await drive(op, workers, seconds)
    c1, s1 = client_cpu(), server_cpu(database)
    server = None if s0 is None or s1 is None else s1 - s0
    return Sample(ops, elapsed, c1 - c0, server)


async def drive(op: Callable[[random.Random], Awaitable[None]], workers: int,
                seconds: float) -> tuple[int, float]:  # fmt: skip
    """Closed loop: `workers` tasks run `op` back to back for `seconds`; (ops, seconds)."""
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def worker(n: int) -> int:
        rng = random.Random(n)
        done = 0
        while time.perf_counter() < deadline:
            await op(rng)
            done += 1
        return done

    total = sum(await asyncio.gather(*(worker(n) for n in range(workers))))
    return total, time.perf_counter() - started


async def throughput(engine: AsyncEngine, users: Sequence[int], wallet_ids: Sequence[int],
                     args: argparse.Namespace) -> list[dict[str, Sample]]:  # fmt: skip
    insert = text("INSERT INTO bench_inserts (wallet_id, amount) VALUES (:w, 1)")
    tries = {"attempts": 0, "done": 0}

    async def baseline(rng: random.Random) -> None:
        async with engine.begin() as conn:
            await conn.execute(insert, {"w": rng.choice(wallet_ids)})

    async def ledger(rng: random.Random) -> None:
        user = rng.choice(users)

        async def attempt() -> None:
            tries["attempts"] += 1
            async with SqlUnitOfWork(engine) as u:
                await book.move(u.ledger, wallet(user, "USD"), REVENUE, 1, TransferCode.USAGE,
                                reference=f"bench:{user}")  # fmt: skip
                await u.commit()

        await retrying(attempt)
        tries["done"] += 1

    rounds: list[dict[str, Sample]] = []
    print("  round  target    commits/s  client CPU ms/op  server CPU ms/op")
    for n in range(args.rounds):
        got: dict[str, Sample] = {}
        order = [("baseline", baseline), ("ledger", ledger)]
        for name, op in order if n % 2 == 0 else order[::-1]:
            await drive(op, args.workers, args.warmup)
            got[name] = sample = await measure(op, args.workers, args.seconds, args.database)
            print(f"  {n + 1:5d}  {name:8s}  {sample.rate:9.0f}  {sample.per_op(sample.client):>16s}"
                  f"  {sample.per_op(sample.server):>16s}")  # fmt: skip
        rounds.append(got)
        print(f"         ratio ledger/baseline {got['ledger'].rate / got['baseline'].rate:.2f}")
    print(f"  ledger transactions retried for contention: {tries['attempts'] - tries['done']} "
          f"of {tries['done']}")  # fmt: skip
    return rounds


# -- metering tick ------------------------------------------------------------------------------


async def tick(engine: AsyncEngine, hold_ids: Sequence[int], chunk: int,
               database: str) -> float:  # fmt: skip
    """One capture of 1 on every hold, `chunk` holds per transaction, in sequence; seconds."""
    now = datetime.now(UTC)
    c0, s0 = client_cpu(), server_cpu(database)
    started = time.perf_counter()
    for start in range(0, len(hold_ids), chunk):
        batch = [(h, Capture(1)) for h in hold_ids[start : start + chunk]]
        async with SqlUnitOfWork(engine) as u:
            await book.act_many(u.ledger, batch, now)
            await u.commit()
    elapsed = time.perf_counter() - started
    c1, s1 = client_cpu(), server_cpu(database)
    server = "n/a" if s0 is None or s1 is None else f"{s1 - s0:.2f} s"
    print(f"    chunk {chunk}: {elapsed:.2f} s (client CPU {c1 - c0:.2f} s, server CPU {server})")
    return elapsed


def profiled(seconds_label: str, coro_fn: Callable[[], Awaitable[object]]) -> Awaitable[object]:
    async def run() -> object:
        profile = cProfile.Profile()
        profile.enable()
        try:
            return await coro_fn()
        finally:
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
            print(f"\n-- profile: {seconds_label} --\n{out.getvalue()}")

    return run()


# -- main -------------------------------------------------------------------------------------


async def run(url: str, server: str, args: argparse.Namespace) -> int:
    engine = make_engine(url, pool_size=args.workers + 4)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        print(f"ledger bench: {server}, PostgreSQL {version}, {os.cpu_count()} cores shared by "
              "PostgreSQL and this process")  # fmt: skip
        started = time.perf_counter()
        wallets = await seed(engine, args.wallets)
        users, wallet_ids = list(wallets), list(wallets.values())
        print(f"seeded {len(users)} funded wallets in {time.perf_counter() - started:.1f} s")

        print(f"\n1. committed transfers per second: {args.workers} workers, pool "
              f"{args.workers + 4}, {args.rounds} round(s) of {args.warmup:g} s warm-up + "
              f"{args.seconds:g} s measured per target")  # fmt: skip
        rounds = await throughput(engine, users, wallet_ids, args)
        ratio = statistics.median(r["ledger"].rate / r["baseline"].rate for r in rounds)
        base = statistics.median(r["baseline"].rate for r in rounds)
        led = statistics.median(r["ledger"].rate for r in rounds)
        print(f"  median: baseline {base:.0f}/s, ledger {led:.0f}/s, "
              f"ratio {ratio:.2f} (target >= 0.3: {'met' if ratio >= 0.3 else 'NOT met'})")  # fmt: skip
        for name in ("baseline", "ledger"):
            ops = sum(r[name].ops for r in rounds)
            client = sum(r[name].client for r in rounds)
            servers = [r[name].server for r in rounds]
            backends = None if None in servers else sum(s or 0.0 for s in servers)
            cpu = "n/a" if backends is None else f"{1000 * (client + backends) / ops:.2f}"
            print(f"  {name}: CPU per commit, client + server: {cpu} ms "
                  f"(client {1000 * client / ops:.2f} ms)")  # fmt: skip

        started = time.perf_counter()
        hold_ids = await open_holds(engine, wallet_ids, args.holds)
        print(f"\n2. metering tick: {len(hold_ids)} open holds on {len(wallet_ids)} wallets "
              f"(set up in {time.perf_counter() - started:.1f} s); one Capture(1) per hold "
              "through book.act_many, one transaction per chunk, in sequence")  # fmt: skip
        headline: list[float] = []
        for _ in range(args.tick_repeats):
            headline.append(await tick(engine, hold_ids, args.chunk, args.database))
        best = statistics.median(headline)
        print(f"  chunk {args.chunk}: " + ", ".join(f"{s:.2f} s" for s in headline)
              + f"; median {best:.2f} s = {len(hold_ids) / best:.0f} captures/s "
              f"(target < 5 s: {'met' if best < 5 else 'NOT met'})")  # fmt: skip
        for chunk in args.other_chunks:
            await tick(engine, hold_ids, chunk, args.database)
        if args.profile:
            await profiled(f"one tick, chunk {args.chunk}",
                           lambda: tick(engine, hold_ids, args.chunk, args.database))  # fmt: skip
            await profiled("ledger transfers, 2 s",
                           lambda: throughput_once(engine, users, args))  # fmt: skip

        started = time.perf_counter()
        async with SqlUnitOfWork(engine) as u:
            check = await u.ledger.verify()
        print(f"\n3. verify: {check.accounts_checked} accounts, {check.transfers_checked} "
              f"transfers in {time.perf_counter() - started:.1f} s: "
              f"{'clean' if not check.problems else check.problems[:5]}")  # fmt: skip
        return 0 if not check.problems else 1
    finally:
        await engine.dispose()


async def throughput_once(engine: AsyncEngine, users: Sequence[int],
                          args: argparse.Namespace) -> tuple[int, float]:  # fmt: skip
    async def ledger(rng: random.Random) -> None:
        user = rng.choice(users)
        async with SqlUnitOfWork(engine) as u:
            await book.move(u.ledger, wallet(user, "USD"), REVENUE, 1, TransferCode.USAGE)
            await u.commit()

    return await drive(ledger, args.workers, 2.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--wallets", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16, help="concurrent tasks (default 16)")
    parser.add_argument("--seconds", type=float, help="measured seconds per target and round")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per target and round")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    parser.add_argument("--holds", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1000, help="holds per transaction")
    parser.add_argument("--profile", action="store_true", help="cProfile a tick and transfers")
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.tick_repeats = 1 if args.quick else 3
    args.other_chunks = [] if args.quick else [250, 2000]
    return args


def in_scratch_database(
    prefix: str,
    args: argparse.Namespace,
    run: Callable[[str, str, argparse.Namespace], Coroutine[Any, Any, int]],
) -> int:
    """`run(url, server, args)` on a migrated scratch database (its name in `args.database`),
    dropped at the end whatever happens."""
    with database_server() as (admin_url, server):
        name, url = create_database(admin_url, prefix=prefix)
        args.database = name
        try:
            migrate.upgrade(url)
            return run_main(run(url, server, args))
        finally:
            drop_database(admin_url, name)
            print(f"\ndropped {name}")


def main(argv: Sequence[str] | None = None) -> int:
    return in_scratch_database("gpucloud_bench_ledger", parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
