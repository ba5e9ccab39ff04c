"""Realtime fan-out: N websocket subscribers on one API process, on loopback, and the time from
an event's commit to its delivery at every one of them; plus memory per idle subscriber.

Setup: a scratch database (bench/common.py) and a Redis namespace of its own; one real
`gpucloud serve` and one `gpucloud worker` (the outbox relay that publishes to Redis).
`--subscribers` graphql-transport-ws sockets, `--per-user` of them per user (the default
per-user limit), each signed in with its user's API token in `connection_init`. The clients
are split over `--client-procs` processes (2 cores: one Python process cannot read 10,000
sockets quickly enough alone); each lifts its open-files limit.

The clients run on the same 2 cores as the server, so whatever CPU a client spends reading is
measurement overhead: it delays the server's sends and the other clients' reads, and it is
charged to the baseline and the platform alike, inflating both latencies. The default client
(`--client lean`, bench/lean_ws.py) therefore costs as little as it can, as the load generator
of bench/graphql_read.py does with raw asyncio streams: one asyncio.Protocol per socket (no
task or queue per socket), a hand-written HTTP/1.1 upgrade, masked client frames, and server
frames parsed incrementally in `data_received`, which reads the clock before anything else
and stamps every message of the chunk with that time. `--client websockets` uses the
`websockets` library's client instead (a task per socket), to compare; the header line names
the client used.

Server pings are every 300 s, so none falls in the run (the clients answer them anyway).
Clients offer permessage-deflate, as browsers do; `gpucloud serve` declines it (gpucloud/cli.py),
and so does the baseline (`--no-deflate`: clients do not offer). The lean client does not
implement it: a server that accepted the offer would fail every socket at the upgrade (printed
as sockets that failed to open) rather than have its compressed frames mis-read.

1. Baseline: the same clients against a bare Starlette endpoint (this module's `baseline_app`,
   its own uvicorn process) that holds one Redis subscription and forwards each message to
   every socket, in the same graphql-transport-ws framing; no auth, GraphQL or database.
   The bench publishes to Redis; the clock starts just before the publish.
2. Platform, broadcast: every socket subscribes to `catalogChanged`; the bench adds a SKU
   (domain.catalog.services.add_sku) and starts the clock when its commit returns.
3. Platform, per-user: every socket subscribes to `notifications`; the bench notifies every
   user in one transaction (domain.notifications.services.notify) and starts the clock at its
   commit. Each poke makes each subscription read its user's new rows from PostgreSQL.

Each scenario first sends a warm-up event and waits until every socket got it (so every
subscription is registered server-side), then `--events` events, one at a time: the next is
sent once every socket got the last (or after a timeout) and a short pause, so the numbers are
per event, not a backlog. Latency = receive time in the client - start time, over subscribers
x events (one machine, one clock: time.time()). It includes the clients' own time to read N
messages on a busy 2-core machine (kept small, above); the baseline carries the same client
cost, hence the ratio.
Memory = the server process's own VmRSS (and USS, its private pages) after every socket is
subscribed and idle for a few seconds, minus before any connected, divided by N (the first
scenario on a fresh process; the baseline likewise). The clients' memory is not in it.

Prints p50/p99/max, deliveries (must be N x events), the ratios platform/baseline, p99 against
the 1 s target, and CPU seconds per delivery of server, worker and clients. Everything is
removed at the end (processes, database, the namespace's Redis keys), Ctrl-C included.

    .venv/bin/python -m bench.fanout [--quick] [--subscribers N] [--events K] [--no-deflate]
                                     [--client lean|websockets]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench import common
from bench.common import bench_database, run_main
from bench.graphql_read import Server, start_server, stop_server

SUBPROTOCOL = "graphql-transport-ws"
CATALOG = "subscription Fanout { catalogChanged { kind sku { name } } }"
NOTIFICATIONS = "subscription Fanout { notifications { type payload } }"
BASELINE = "subscription Fanout { baseline }"  # the baseline app ignores the text
MARK = re.compile(r"fanout-(\d+)")  # every event carries its index as "fanout-NNNN"
CONNECTS_AT_ONCE = 100  # per client process: a handshake storm would only measure the backlog
IDLE_SECONDS = 5.0  # idle before reading RSS: let the allocator and the server settle
PAUSE_SECONDS = 0.5  # between one event's last delivery and the next event
PING_INTERVAL = "300"
STALL_SECONDS = 10.0  # longer than the app's 5 s pool timeout: a stall this long is final


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def uss_kib(pid: int) -> int:
    """Memory only this process holds (private pages): RSS less what it shares."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def raise_open_files() -> None:
    """10,000 sockets in one process: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


# --- the baseline server ---------------------------------------------------------------------


def baseline_app() -> Any:
    """uvicorn factory: one Redis subscription, forwarded to every socket as a `next` message.

    What fan-out costs in this stack without the platform: each socket gets a queue and a
    sender task, as the platform's event hub and subscription tasks do."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    redis_url, channel = os.environ["REDIS_URL"], os.environ["FANOUT_CHANNEL"]
    queues: set[asyncio.Queue[str]] = set()

    async def forward() -> None:
        client = aioredis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        async for raw in pubsub.listen():
            if raw["type"] == "message":
                data = raw["data"].decode()
                for queue in list(queues):
                    queue.put_nowait(data)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(forward())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept(subprotocol=SUBPROTOCOL)
        if (await ws.receive_json()).get("type") != "connection_init":
            await ws.close(4400)
            return
        await ws.send_text('{"type":"connection_ack"}')
        operation = (await ws.receive_json())["id"]
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def send() -> None:
            while True:
                data = await queue.get()
                await ws.send_text(
                    f'{{"id":"{operation}","type":"next","payload":{{"data":{data}}}}}'
                )

        queues.add(queue)
        sender = asyncio.create_task(send())
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass  # pongs and the like: nothing to do
        finally:
            queues.discard(queue)
            sender.cancel()

    return Starlette(routes=[WebSocketRoute("/graphql", endpoint)], lifespan=lifespan)


# --- the clients ------------------------------------------------------------------------------


CLIENTS = ("lean", "websockets")  # --client: bench/lean_ws.py, or the `websockets` library


def client_main(
    conn: Connection,
    url: str,
    query: str,
    tokens: list[str],
    received: Synchronized[int],
    ended: Synchronized[int],
    deflate: bool,
    client: str = "lean",
) -> None:
    """A client process: open one subscribed socket per token, report, read until told to stop,
    then send back each event's receive times."""
    raise_open_files()
    run = _clients if client == "lean" else _websockets_clients
    with contextlib.suppress(KeyboardInterrupt):  # the parent cleans up on Ctrl-C
        run_main(run(conn, url, query, tokens, received, ended, deflate))


def _init(token: str) -> bytes:
    return orjson.dumps(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
    )


def _subscribe(query: str) -> bytes:
    return orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}})


PONG = b'{"type":"pong"}'
EVENT, PING, END = "event", "ping", "end"
_MARK = re.compile(MARK.pattern.encode())


class _Tally:
    """What one client process saw: each event's receive times, and the subscriptions the server
    ended (a few of their last messages kept to show)."""

    def __init__(self, received: Synchronized[int], ended: Synchronized[int]) -> None:
        self.received, self.ended = received, ended
        self.samples: defaultdict[int, list[float]] = defaultdict(list)
        self.problems: list[str] = []

    def message(self, raw: bytes, now: float) -> str:
        """EVENT (counted), PING (answer it) or END ("error" or "complete": read no further)."""
        found = _MARK.search(raw)
        if found is not None:
            self.samples[int(found[1])].append(now)
            self.received.value += 1  # one writer per counter: no lock needed
            return EVENT
        if b'"ping"' in raw:
            return PING
        self.end(raw[:300].decode(errors="replace"))
        return END

    def end(self, why: str) -> None:
        self.ended.value += 1
        if len(self.problems) < 5:
            self.problems.append(why)

    def report(self, conn: Connection) -> None:
        conn.send(("samples", dict(self.samples), self.problems))


async def _clients(
    conn: Connection,
    url: str,
    query: str,
    tokens: list[str],
    received: Synchronized[int],
    ended: Synchronized[int],
    deflate: bool,
) -> int:
    """The lean client (bench/lean_ws.py): one asyncio.Protocol per socket, each message
    handled in `data_received` with the time its chunk arrived; no task per socket."""
    from bench.lean_ws import LeanSocket, connect

    tally = _Tally(received, ended)
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    subscribe = _subscribe(query)

    def on_message(sock: LeanSocket, now: float, raw: bytes) -> None:
        kind = tally.message(raw, now)
        if kind == PING:
            sock.send_text(PONG)
        elif kind == END:
            sock.done = True  # read no further, as the websockets client's reader returns

    def on_end(sock: LeanSocket, why: str) -> None:
        tally.end(f"closed: {why}")

    async def open_one(token: str) -> LeanSocket:
        async with gate:
            sock = await connect(url, SUBPROTOCOL, deflate=deflate, timeout=120)
            try:
                sock.send_text(_init(token))
                ack = orjson.loads(await asyncio.wait_for(sock.receive(), 120))
                if ack.get("type") != "connection_ack":
                    raise RuntimeError(f"no ack: {ack}")
                sock.send_text(subscribe)
                sock.listen(on_message, on_end)
            except BaseException:
                sock.abort()
                raise
            return sock

    opened = await asyncio.gather(*(open_one(t) for t in tokens), return_exceptions=True)
    sockets = [sock for sock in opened if isinstance(sock, LeanSocket)]
    failed = [repr(sock)[:200] for sock in opened if isinstance(sock, BaseException)]
    conn.send(("ready", len(sockets), failed[:5], len(failed)))
    await asyncio.to_thread(conn.recv)  # "stop"
    for sock in sockets:
        sock.close()  # stop reading; a masked close frame; the transport closes on the reply
    if sockets:
        await asyncio.wait([sock.lost for sock in sockets], timeout=30)
    for sock in sockets:
        sock.abort()  # any the server did not answer in time
    tally.report(conn)
    return 0


async def _websockets_clients(
    conn: Connection,
    url: str,
    query: str,
    tokens: list[str],
    received: Synchronized[int],
    ended: Synchronized[int],
    deflate: bool,
) -> int:
    """The `websockets` library's client (--client websockets): a task per socket."""
    import websockets

    tally = _Tally(received, ended)
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    subscribe = _subscribe(query)

    async def open_one(token: str) -> Any:
        async with gate:
            ws = await websockets.connect(
                url,
                subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
                ping_interval=None,
                open_timeout=120,
                max_queue=None,
                compression="deflate" if deflate else None,
            )
            await ws.send(_init(token).decode())
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no ack: {ack}")
            await ws.send(subscribe.decode())
            return ws

    async def read(ws: Any) -> None:
        try:
            async for raw in ws:
                now = time.time()  # first, before any parsing
                kind = tally.message(raw.encode() if isinstance(raw, str) else raw, now)
                if kind == PING:
                    await ws.send(PONG.decode())
                elif kind == END:
                    return
        except websockets.ConnectionClosed as closed:
            tally.end(f"closed: {closed}")

    opened = await asyncio.gather(*(open_one(t) for t in tokens), return_exceptions=True)
    sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
    failed = [repr(ws)[:200] for ws in opened if isinstance(ws, BaseException)]
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    conn.send(("ready", len(sockets), failed[:5], len(failed)))
    await asyncio.to_thread(conn.recv)  # "stop"
    for reader in readers:
        reader.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    tally.report(conn)
    return 0


@dataclass
class Clients:
    """The client processes of one scenario."""

    procs: list[multiprocessing.process.BaseProcess]
    conns: list[Connection]
    counters: list[Synchronized[int]]
    enders: list[Synchronized[int]]
    connected: int = 0

    def received(self) -> int:
        return sum(counter.value for counter in self.counters)

    def ended(self) -> int:
        """Subscriptions the server ended (an error, or the socket closed)."""
        return sum(counter.value for counter in self.enders)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs if p.pid is not None)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)


def _recv(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"a client process did not answer within {timeout:.0f} s")
    return conn.recv()


async def start_clients(
    url: str, query: str, tokens: list[str], procs: int, deflate: bool, client: str
) -> Clients:
    ctx = multiprocessing.get_context("spawn")
    clients = Clients([], [], [], [])
    for part in range(procs):
        mine, theirs = ctx.Pipe()
        counter: Synchronized[int] = ctx.Value("q", 0, lock=False)
        ender: Synchronized[int] = ctx.Value("q", 0, lock=False)
        mine_tokens = tokens[part::procs]
        proc = ctx.Process(
            target=client_main,
            daemon=True,
            args=(theirs, url, query, mine_tokens, counter, ender, deflate, client),
        )
        proc.start()
        clients.procs.append(proc)
        clients.conns.append(mine)
        clients.counters.append(counter)
        clients.enders.append(ender)
    try:
        for conn in clients.conns:
            _, connected, errors, failures = await asyncio.to_thread(_recv, conn, 900)
            clients.connected += connected
            if failures:
                print(f"  {failures} sockets failed to open, e.g. {errors}")
    except BaseException:
        clients.kill()
        raise
    return clients


async def stop_clients(clients: Clients) -> tuple[dict[int, list[float]], list[str]]:
    samples: defaultdict[int, list[float]] = defaultdict(list)
    problems: list[str] = []
    try:
        for conn in clients.conns:
            conn.send("stop")
        for conn in clients.conns:
            _, got, trouble = await asyncio.to_thread(_recv, conn, 120)
            for event, times in got.items():
                samples[event].extend(times)
            problems.extend(trouble)
    finally:
        clients.kill()
    return dict(samples), problems


async def delivered(clients: Clients, base: int, timeout: float) -> bool:
    """Wait until every live subscription has one more event than at `base` deliveries; give
    up after `timeout`, or STALL_SECONDS without progress (subscriptions may end meanwhile)."""
    deadline = time.monotonic() + timeout
    seen, moved = clients.received(), time.monotonic()
    while (got := clients.received()) < base + clients.connected - clients.ended():
        now = time.monotonic()
        if got != seen:
            seen, moved = got, now
        if now > deadline or now - moved > STALL_SECONDS:
            return False
        await asyncio.sleep(0.005)
    return True


# --- a scenario --------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    subscribers: int
    latencies: list[float] = field(default_factory=list)
    last_per_event: list[float] = field(default_factory=list)  # slowest socket, each event
    missing: int = 0
    ended: int = 0  # subscriptions the server ended (errors) during the scenario
    kib_per_subscriber: float | None = None  # the server's RSS growth per idle subscriber
    uss_kib_per_subscriber: float | None = None  # the same, private pages only
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per delivery
    problems: list[str] = field(default_factory=list)


Fire = Callable[[int], Awaitable[float]]  # send event k; returns its start time (time.time())


async def scenario(name: str, server: Server, url: str, query: str, tokens: list[str],
                   fire: Fire, args: argparse.Namespace, *, measure_memory: bool,
                   worker_pid: int | None = None) -> Result:  # fmt: skip
    print(f"\n{name}: opening {len(tokens)} sockets ...", flush=True)
    before, before_uss = rss_kib(server.proc.pid), uss_kib(server.proc.pid)
    started = time.monotonic()
    clients = await start_clients(url, query, tokens, args.client_procs, args.deflate, args.client)
    try:
        n = clients.connected
        result = Result(name, n)
        print(f"  {n} subscribed in {time.monotonic() - started:.1f} s", flush=True)
        await asyncio.sleep(IDLE_SECONDS)
        if measure_memory and n:
            result.kib_per_subscriber = (rss_kib(server.proc.pid) - before) / n
            result.uss_kib_per_subscriber = (uss_kib(server.proc.pid) - before_uss) / n
        await fire(0)  # warm-up: every subscription is live server-side once all have it
        if not await delivered(clients, 0, args.event_timeout):
            print(f"  warm-up reached {clients.received()} of {n} sockets")
        await asyncio.sleep(PAUSE_SECONDS)
        pids = {"server": server.proc.pid, "worker": worker_pid}
        cpu_before = {k: cpu_seconds(p) for k, p in pids.items() if p is not None}
        client_cpu = clients.cpu_seconds()
        starts: dict[int, float] = {}
        for k in range(1, args.events + 1):
            base = clients.received()
            starts[k] = await fire(k)
            if not await delivered(clients, base, args.event_timeout):
                print(f"  event {k}: {clients.received() - base} of {n} delivered; "
                      f"{clients.ended()} subscriptions ended so far")  # fmt: skip
            await asyncio.sleep(PAUSE_SECONDS)
        # Totals here; per delivery below, once the deliveries are counted.
        result.cpu = {k: cpu_seconds(p) - cpu_before[k] for k, p in pids.items() if p is not None}
        result.cpu["clients"] = clients.cpu_seconds() - client_cpu
        result.ended = clients.ended()
    finally:
        samples, problems = await stop_clients(clients)
    result.problems = problems
    for k, start in starts.items():
        got = [t - start for t in samples.get(k, [])]
        result.latencies.extend(got)
        result.missing += n - len(got)
        if got:
            result.last_per_event.append(max(got))
    result.cpu = {k: v / max(1, len(result.latencies)) for k, v in result.cpu.items()}
    print("  " + summary(result), flush=True)
    slowest = ", ".join(f"{x * 1000:.0f}" for x in result.last_per_event)
    print(f"  slowest socket per event, ms: {slowest}", flush=True)
    if result.missing or problems:
        print(f"  client problems, e.g. {problems[:3]}\n  server log, last lines:\n"
              f"{server.tail(2000)}")  # fmt: skip
    return result


def summary(r: Result) -> str:
    if not r.latencies:
        return f"{r.name}: nothing delivered"
    ms = [x * 1000 for x in r.latencies]
    mem = (
        ""
        if r.kib_per_subscriber is None
        else (
            f", {r.kib_per_subscriber:.1f} KiB/subscriber (RSS; {r.uss_kib_per_subscriber:.1f} USS)"
        )
    )
    return (f"p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, "
            f"max {max(ms):.0f} ms, min {min(ms):.1f} ms; {len(ms)} delivered, {r.missing} "
            f"missing; {r.ended} subscriptions ended by the server{mem}")  # fmt: skip


# --- setup: users, tokens, processes -------------------------------------------------------------


async def seed_tokens(uow: Callable[[], Any], users: int) -> tuple[list[int], list[str]]:
    """`users` users, each with an API token that may read its account (and so subscribe)."""
    from domain.audit.records import RequestMeta
    from domain.identity.api_tokens import create_api_token
    from domain.identity.scopes import Role, Scope
    from tests.support.compute import signed_in

    async with uow() as u:
        made = [await u.users.add(f"fanout-{i}@bench.test", None, Role.USER) for i in range(users)]
        await u.commit()
    expires = datetime.now(UTC) + timedelta(days=1)
    meta = RequestMeta(request_id="bench")
    secrets = []
    for user in made:
        _, secret = await create_api_token(uow(), signed_in(user.id), "fanout",
                                           [Scope.ACCOUNT_READ], expires, meta)  # fmt: skip
        secrets.append(secret)
    return [user.id for user in made], secrets


@contextlib.contextmanager
def worker_process(env: dict[str, str]) -> Any:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}
    proc = subprocess.Popen([sys.executable, "-m", "gpucloud", "worker"], cwd=common.ROOT,
                            env={**base, **env}, stdout=log, stderr=log)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc.returncode:
            log.seek(0)
            print(f"worker exited with {proc.returncode}:\n{log.read().decode()[-3000:]}")
        log.close()


async def clear_namespace(redis_url: str, namespace: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# --- main --------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def report(results: list[Result], baseline: Result) -> None:
    print("\n| scenario | subscribers | ended | p50 ms | p99 ms | max ms | slowest socket/event, "
          "median ms | delivered | missing | KiB/subscriber | p50 vs base | p99 vs base |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    b50 = percentile(baseline.latencies, 0.5) if baseline.latencies else 0.0
    b99 = percentile(baseline.latencies, 0.99) if baseline.latencies else 0.0
    for r in [baseline, *results]:
        if not r.latencies:
            print(f"| {r.name} | {r.subscribers} | {r.ended} | - | - | - | - | 0 | {r.missing} "
                  "| - | - | - |")  # fmt: skip
            continue
        p50, p99 = percentile(r.latencies, 0.5), percentile(r.latencies, 0.99)
        last = percentile(r.last_per_event, 0.5)
        mem = "-" if r.kib_per_subscriber is None else f"{r.kib_per_subscriber:.1f}"
        print(f"| {r.name} | {r.subscribers} | {r.ended} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | "
              f"{max(r.latencies) * 1000:.0f} | {last * 1000:.0f} | {len(r.latencies)} | "
              f"{r.missing} | {mem} | {ratio(p50, b50)} | {ratio(p99, b99)} |")  # fmt: skip
    print("\nCPU ms per delivery (server, worker, all client processes):")
    for r in [baseline, *results]:
        print(f"  {r.name}: " + ", ".join(f"{k} {v * 1000:.3f}" for k, v in r.cpu.items()))
    for r in results:
        if r.latencies:
            p99 = percentile(r.latencies, 0.99)
            verdict = "meets" if p99 < 1.0 else "MISSES"
            print(f"{r.name}: p99 {p99 * 1000:.0f} ms {verdict} the 1 s target")
        if r.kib_per_subscriber is not None:
            verdict = "meets" if r.kib_per_subscriber < 30 else "MISSES"
            print(
                f"{r.name}: {r.kib_per_subscriber:.1f} KiB per idle subscriber (server RSS; "
                f"{r.uss_kib_per_subscriber:.1f} KiB USS) {verdict} the 30 KiB target"
            )
        if r.kib_per_subscriber is not None and baseline.kib_per_subscriber:
            print(f"{r.name}: memory per idle subscriber "
                  f"{ratio(r.kib_per_subscriber, baseline.kib_per_subscriber)} the baseline's")  # fmt: skip
        if r.problems:
            print(f"{r.name}: client problems, e.g. {r.problems[:3]}")


async def main(args: argparse.Namespace) -> int:
    from domain.catalog.services import add_sku
    from domain.catalog.sku import SkuSpec
    from domain.notifications.notices import NoticeType
    from domain.notifications.services import notify
    from infra.db.engine import make_engine
    from infra.db.uow import SqlUnitOfWork

    raise_open_files()  # inherited by the servers
    users = math.ceil(args.subscribers / args.per_user)
    async with bench_database() as db:
        namespace = db.env["GPUCLOUD_REDIS_NAMESPACE"]
        redis_url = db.env["REDIS_URL"]
        engine = make_engine(db.env["DATABASE_URL"], pool_size=2)
        publisher = aioredis.from_url(redis_url)
        servers: list[Server] = []
        try:
            uow: Callable[[], Any] = lambda: SqlUnitOfWork(engine)  # noqa: E731
            user_ids, secrets = await seed_tokens(uow, users)
            tokens = [secrets[i // args.per_user] for i in range(args.subscribers)]
            print(
                f"{args.subscribers} subscribers: {users} users x {args.per_user} sockets; "
                f"{args.events} events per scenario; {args.client_procs} client processes, "
                f"{args.client} client; permessage-deflate "
                f"{'offered' if args.deflate else 'off'}; {os.cpu_count()} CPUs"
            )

            # 1. Baseline: its own process, so its memory is measured alone.
            channel = f"{namespace}:baseline"
            base_server = await start_server("baseline", [
                sys.executable, "-m", "uvicorn", "--factory", "bench.fanout:baseline_app",
                "--log-level", "warning", "--no-access-log",
                "--ws-per-message-deflate", "false",  # as `gpucloud serve` (gpucloud/cli.py)
            ], {"REDIS_URL": redis_url, "FANOUT_CHANNEL": channel})  # fmt: skip
            servers.append(base_server)

            async def publish(k: int) -> float:
                start = time.time()  # the publish returns after Redis has sent it on
                await publisher.publish(channel, orjson.dumps({"mark": f"fanout-{k:04d}"}))
                return start

            baseline = await scenario("baseline", base_server,
                                      f"ws://{common.HOST}:{base_server.port}/graphql",
                                      BASELINE, tokens, publish, args, measure_memory=True)  # fmt: skip
            stop_server(base_server)
            servers.remove(base_server)

            # 2, 3. The platform.
            env = {
                **db.env, "GPUCLOUD_LOG_LEVEL": "warning",
                "GPUCLOUD_WS_PING_INTERVAL_SECONDS": PING_INTERVAL,
                # Twice the sockets per user: scenario 3's sockets open while the server may
                # still be releasing scenario 2's slots.
                "GPUCLOUD_WS_MAX_CONNECTIONS_PER_USER": str(2 * args.per_user),
            }  # fmt: skip
            with worker_process(env) as worker:
                api = await start_server("platform", [sys.executable, "-m", "gpucloud", "serve"],
                                         env)  # fmt: skip
                servers.append(api)
                url = f"ws://{common.HOST}:{api.port}/graphql"

                async def add(k: int) -> float:
                    spec = SkuSpec.create(name=f"fanout-{k:04d}", gpu_model="H100", gpu_count=1,
                                          vcpus=8, ram_gib=64, disk_gib=100, region="eu-west",
                                          hourly_price_minor=249, currency="USD")  # fmt: skip
                    await add_sku(uow(), spec)
                    return time.time()

                async def tell_everyone(k: int) -> float:
                    async with uow() as u:
                        await notify(u, user_ids, NoticeType.NODE_ALERT,
                                     {"mark": f"fanout-{k:04d}"})  # fmt: skip
                        await u.commit()
                    return time.time()

                results = [await scenario("catalogChanged", api, url, CATALOG, tokens, add, args,
                                          measure_memory=True, worker_pid=worker.pid)]  # fmt: skip
                if not args.skip_notifications:
                    results.append(await scenario(
                        "notifications", api, url, NOTIFICATIONS, tokens, tell_everyone, args,
                        measure_memory=False, worker_pid=worker.pid))  # fmt: skip
                if worker.poll() is not None:
                    print(f"WARNING: the worker exited with {worker.returncode}")
            report(results, baseline)
        finally:
            for server in servers:
                stop_server(server)
            await publisher.aclose()
            await engine.dispose()
            await clear_namespace(redis_url, namespace)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 subscribers, 5 events")
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--per-user", type=int, default=10, help="sockets per user (default: the "
                   "default per-user limit)")  # fmt: skip
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="lean",
        help="the websocket client: lean (bench/lean_ws.py, the default) or the websockets "
        "library's, to compare what the client costs",
    )
    p.add_argument("--event-timeout", type=float, default=60.0,
                   help="seconds to wait for one event to reach every socket")  # fmt: skip
    p.add_argument("--no-deflate", dest="deflate", action="store_false",
                   help="clients do not offer permessage-deflate")  # fmt: skip
    p.add_argument("--skip-notifications", action="store_true",
                   help="only the broadcast scenario")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.subscribers, args.events = 200, 5
    return args


if __name__ == "__main__":
    sys.exit(run_main(main(parse(sys.argv[1:]))))
