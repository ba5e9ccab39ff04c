"""Read-path benchmark: `skus(first: 50)` over GraphQL against a bare Starlette+asyncpg baseline.

Fresh database (bench/common.py); SQL per request in-process (cache off: per executed request,
page sizes 1/10/50; cache on: a repeated request); then the baseline (bench/baseline_app.py) and
the real API (`gpucloud serve`, result cache off and on, log info) as uvicorn subprocesses, each
checked to return the baseline's JSON, each driven by one closed-loop load generator: req/s,
p50/p99, server CPU per request, ratios. Exit 1 if the statement or round-trip counts are wrong
(an executed read must be one round trip). Profiling of
the executing path: bench/profile_graphql.py.

    .venv/bin/python -m bench.graphql_read [--quick] [--duration S] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bench import common
from bench.common import HOST, graphql_body

PAGE_SIZES = (1, 10, 50)
COUNT_REPEATS = 20
CACHE_OFF, CACHE_ON = "graphql (cache off)", "graphql (cache on)"


# --- server subprocesses ----------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]  # a temp file holding its stdout/stderr (the access log at info)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (Linux), to show CPU per request."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def tail(self, size: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-size:]


async def start_server(name: str, argv: list[str], env: dict[str, str]) -> Server:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; closed in stop_server
    # Our GPUCLOUD_* settings only: none inherited from the shell may change what is measured.
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}
    proc = subprocess.Popen(
        [*argv, "--host", HOST, "--port", str(port)],
        cwd=common.ROOT, env={**base, **env}, stdout=log, stderr=log,
    )  # fmt: skip
    server = Server(name, proc, port, log)
    # uvicorn runs the lifespan before it binds, so an accepted connection means ready.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.tail()}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return server
    raise RuntimeError(f"{name} did not start within 60 s:\n{server.tail()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    server.log.close()


# --- the load generator -----------------------------------------------------------------
# Raw asyncio streams and one pre-encoded request: on a 2-core machine the generator competes
# with the server and PostgreSQL for CPU, so it must cost as little per request as possible.


def encode(port: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("response has no Content-Length (chunked responses are not supported)")
    end = head.index(b"\r\n", start + 2)
    return int(head[start + len(b"\r\ncontent-length:") : end])


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    body = await reader.readexactly(content_length(head))
    return int(head[9:12]), body


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    generator_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def drive(
    server: Server, request: bytes, seconds: float, concurrency: int, sample: Sample
) -> None:
    """Closed loop: `concurrency` keep-alive connections, each sending `request` (from
    `encode`) as soon as the previous answer is in, until `seconds` have passed; adds what it
    saw to `sample`."""
    conns = [await asyncio.open_connection(HOST, server.port) for _ in range(concurrency)]
    started, cpu0, server_cpu0 = time.perf_counter(), time.process_time(), server.cpu_seconds()
    deadline = started + seconds

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            status, _ = await exchange(reader, writer, request)
            sample.latencies.append(time.perf_counter() - sent)
            sample.errors += status != 200

    clients = asyncio.gather(*(client(r, w) for r, w in conns))
    try:
        await asyncio.wait_for(clients, seconds + 30)  # bounded even if the server stops answering
    finally:
        if clients.done() and not clients.cancelled():
            clients.exception()  # cancelled by a time limit: retrieved, so asyncio does not log it
        for _, writer in conns:
            writer.close()
    sample.seconds += time.perf_counter() - started
    sample.generator_cpu += time.process_time() - cpu0
    sample.server_cpu += server.cpu_seconds() - server_cpu0


# --- SQL per request (in-process) -------------------------------------------------------


@contextlib.asynccontextmanager
async def counted_app(env: dict[str, str]) -> AsyncIterator[tuple[Any, Any, dict[str, int]]]:
    """The running app, an httpx client on it, and running counts over both of its pools
    (writes and reads): statements = SQLAlchemy cursor executes (what an N+1 multiplies);
    round trips = queries asyncpg's protocol sent (its own `queries_count`: every execution,
    prepared or simple, so BEGIN, ROLLBACK and a pre-ping's `;` too; statement preparation,
    once per statement and connection, is not counted)."""
    import httpx
    from sqlalchemy import event

    counts = {"statements": 0, "round_trips": 0}
    started: dict[int, int] = {}

    def on_statement(*_: object) -> None:
        counts["statements"] += 1

    def sent(dbapi_connection: Any) -> int:
        return int(dbapi_connection.driver_connection._protocol.queries_count)

    def on_checkout(dbapi_connection: Any, record: Any, _: object) -> None:
        started[id(record)] = sent(dbapi_connection)

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and id(record) in started:
            counts["round_trips"] += sent(dbapi_connection) - started.pop(id(record))

    async with common.running_app(env) as app:
        res = app.state.resources
        for engine in (res.engine.sync_engine, res.read_engine.sync_engine):
            event.listen(engine, "before_cursor_execute", on_statement)
            event.listen(engine.pool, "checkout", on_checkout)
            event.listen(engine.pool, "checkin", on_checkin)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield app, client, counts


async def per_request(client: Any, counts: dict[str, int], first: int, n: int) -> list[float]:
    """Statements and round trips per request over `n` identical requests."""
    body = graphql_body(common.COUNT_QUERY, {"first": first})
    before = dict(counts)
    for _ in range(n):
        response = await client.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )
        doc = response.json()
        edges = (doc.get("data") or {}).get("skus", {}).get("edges", [])
        if response.status_code != 200 or "errors" in doc or len(edges) != first:
            raise RuntimeError(f"unexpected response for first={first}: {response.text[:500]}")
    return [(counts[k] - before[k]) / n for k in ("statements", "round_trips")]


async def count_sql(env: dict[str, str]) -> bool:
    """Print SQL per request; True when the counts are as they must be."""
    print(
        "\nSQL per request (in-process; statements = SQLAlchemy cursor executes, round trips "
        "= queries asyncpg sent, BEGIN/ROLLBACK/pre-ping included):"
    )
    off: dict[int, list[float]] = {}
    async with counted_app({**env, "GPUCLOUD_RESULT_CACHE_SECONDS": "0"}) as (_, client, counts):
        for first in PAGE_SIZES:
            await per_request(client, counts, first, 1)  # connect and prepare outside the count
            off[first] = await per_request(client, counts, first, COUNT_REPEATS)
            print(
                f"  cache off, first={first:<3} statements {off[first][0]:.1f}  "
                f"round trips {off[first][1]:.1f}  (each request executes)"
            )
    independent = len({statements for statements, _ in off.values()}) == 1
    one_trip = all(trips == 1.0 for _, trips in off.values())
    print(
        f"  statement count independent of page size: {'yes' if independent else 'NO'}; "
        f"one round trip per executed read: {'yes' if one_trip else 'NO'}"
    )
    async with counted_app({**env, "GPUCLOUD_RESULT_CACHE_SECONDS": "5"}) as (app, client, counts):
        miss = await per_request(client, counts, 50, 1)
        hits = await per_request(client, counts, 50, COUNT_REPEATS)
        stats = app.state.resources.metrics.state.result_cache_stats
    print(f"  cache on,  first=50  first request: statements {miss[0]:.1f}; {COUNT_REPEATS} "
          f"identical repeats: statements {hits[0]:.1f}, round trips {hits[1]:.1f} per "
          f"request (cache {stats})")  # fmt: skip
    return independent and one_trip and hits == [0.0, 0.0]


# --- the run ----------------------------------------------------------------------------


def print_table(results: dict[str, Sample]) -> None:
    print(f"\n{'target':<26}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'errors':>8}"
          f"{'server CPU ms/req':>19}{'generator CPU %':>17}")  # fmt: skip
    for name, s in results.items():
        n = max(1, len(s.latencies))
        print(f"{name:<26}{s.rps:>8.0f}{s.percentile_ms(0.5):>9.2f}{s.percentile_ms(0.99):>9.2f}"
              f"{len(s.latencies):>10}{s.errors:>8}{1000 * s.server_cpu / n:>19.2f}"
              f"{100 * s.generator_cpu / s.seconds:>17.0f}")  # fmt: skip


async def fetch(server: Server, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        headers = {"content-type": "application/json"}
        got = await (client.post(path, content=body, headers=headers) if body else client.get(path))
        return got.status_code, got.content


async def check_answers(servers: list[Server], body: bytes) -> bool:
    """Every GraphQL target must return the baseline's JSON twice (cache on: a miss, a hit)."""
    _, reference = await fetch(servers[0], "/graphql", body)
    for server in servers[1:]:
        answers = [await fetch(server, "/graphql", body) for _ in range(2)]
        for status, answer in answers:
            if status != 200 or orjson.loads(answer) != orjson.loads(reference):
                print(f"\nABORT: {server.name} answered {status} {answer[:300]!r}\n"
                      f"baseline answered {reference[:300]!r}")  # fmt: skip
                return False
        same = all(answer == reference for _, answer in answers)
        print(f"  {server.name}: first and repeat equal to baseline ({len(reference)} bytes; "
              f"byte-identical: {'yes' if same else 'no'})")  # fmt: skip
    return True


async def cache_stats(server: Server) -> str:
    _, text = await fetch(server, "/metrics")
    found = re.findall(rb'gpucloud_graphql_result_cache_total\{outcome="(\w+)"\} ([\d.e+]+)', text)
    return ", ".join(f"{k.decode()} {float(v):.0f}" for k, v in found) or "none reported"


async def run(args: argparse.Namespace) -> int:
    cores = os.cpu_count()
    async with common.bench_database() as db:
        print(f"database {db.name}, {common.SKU_ROWS} SKUs; {cores} cores shared by the load "
              "generator (its CPU share is shown below), the servers and PostgreSQL")  # fmt: skip
        counts_ok = await count_sql(db.env)

        serve = [sys.executable, "-m", "gpucloud", "serve"]
        info = {"GPUCLOUD_LOG_LEVEL": "info", "GPUCLOUD_LOG_FORMAT": "json"}
        targets = [
            ("baseline", [sys.executable, "-m", "bench.baseline_app"], {}),
            (CACHE_OFF, serve, {**info, "GPUCLOUD_RESULT_CACHE_SECONDS": "0"}),
            (CACHE_ON, serve, {**info, "GPUCLOUD_RESULT_CACHE_SECONDS": "5"}),
        ]
        servers: list[Server] = []
        try:
            for name, argv, extra in targets:
                servers.append(await start_server(name, argv, {**db.env, **extra}))
            body = graphql_body(common.QUERY)
            on = next(s for s in servers if s.name == CACHE_ON)
            await asyncio.sleep(0.5)  # let the event hubs subscribe: the cache waits for that
            print("\nresponses:")
            if not await check_answers(servers, body):
                return 1
            print(f"  {CACHE_ON} result cache after the checks: {await cache_stats(on)}")

            print(f"\nload: {args.concurrency} keep-alive connections, {args.rounds} round(s) of "
                  f"{args.warmup:g} s warm-up + {args.duration / args.rounds:g} s measured per "
                  "target, order alternating between rounds")  # fmt: skip
            results = {s.name: Sample() for s in servers}
            for round_no in range(args.rounds):
                for server in servers if round_no % 2 == 0 else servers[::-1]:
                    request = encode(server.port, body)
                    await drive(server, request, args.warmup, args.concurrency, Sample())
                    seconds = args.duration / args.rounds
                    await drive(server, request, seconds, args.concurrency, results[server.name])
            print_table(results)
            base = results["baseline"].rps or float("nan")
            print(f"ratio {CACHE_ON} / baseline throughput: {results[CACHE_ON].rps / base:.2f} "
                  "(headline; target >= 0.5)")  # fmt: skip
            print(f"ratio {CACHE_OFF} / baseline throughput: {results[CACHE_OFF].rps / base:.2f} "
                  "(what executing GraphQL costs)")  # fmt: skip
            print(f"{CACHE_ON} result cache after the load: {await cache_stats(on)}")
        finally:
            for server in servers:
                stop_server(server)
    if not counts_ok:
        print("FAIL: SQL statements or round trips per request are not as they must be (see above)")
    return 0 if counts_ok else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, help="measured seconds per target (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per target and round")
    parser.add_argument("--rounds", type=int, help="alternating rounds the duration is split into")
    parser.add_argument("--quick", action="store_true", help="a short run: 2 s, one round")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_main(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
