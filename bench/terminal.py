"""The browser terminal's cost: `/terminal` against a direct asyncssh session to the same sshd
(needs root and `make sshd`: it makes a real Linux user).

One RUNNING allocation on a loopback sshd node that trusts the platform CA, served by a real
`gpucloud serve` process (its own uvicorn, loop and CPU, as in production). Two PTY sessions to
the allocation's user stay open side by side: one through `/terminal` (a websocket from this
process that offers permessage-deflate as a browser does; `gpucloud serve` declines it, see
gpucloud/cli.py), one opened directly from this process
with the app's own `open_terminal` (asyncssh, same CA login, same PTY type and size). Both put
the PTY in `stty raw -echo` and measure, in `--rounds` rounds whose order alternates:

1. Keystroke round trip: `dd bs=1` echoes each byte; one byte is sent and awaited before the
   next, after a warm-up. p50/p99 both ways and what `/terminal` adds at p50 (target < 2 ms).
2. Bulk output: `cat` of a base64 file (`--megabytes` MiB) until an end marker arrives; MB/s
   both ways and `/terminal` / direct (target >= 0.5).

Everything lives in a scratch database, a Redis namespace, a random user/group prefix and a temp
directory, all removed at the end (also on errors and Ctrl-C).

    .venv/bin/python -m bench.terminal [--quick] [--keystrokes N] [--megabytes M] [--rounds R]
                                       [--no-deflate]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import signal
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from bench.common import bench_database, run_main
from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.allocations import AllocationState
from domain.compute.engine import advance
from domain.compute.terminals import TerminalKit, issue_ticket, terminal_target
from domain.fleet.ca_services import create_ca
from domain.fleet.checks import check_node
from domain.fleet.nodes import NodeState
from domain.identity.principal import Principal
from domain.ledger.policy import LedgerPolicy
from domain.ports import UnitOfWork
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.nodes.factory import make_compute_kit
from infra.nodes.ssh import SshDialer
from infra.nodes.ssh_ca import AsyncsshCaSigner
from infra.nodes.terminal import TerminalSession, open_terminal
from infra.settings import load_settings
from infra.terminal_tickets import RedisTicketStore
from tests.support.accounts import open_node_root, remove_users, serve_user_keys
from tests.support.compute import customer
from tests.support.fleet import fake_devices, fleet_settings, group_prefix, kit_for, register
from tests.support.processes import Process, free_port, wait_ready
from tests.support.ssh_node import EIGHT_H200, running_node

META = RequestMeta(request_id="bench")
ORIGIN = "https://app.bench"
COLS, ROWS = 80, 24
WARMUP = 20  # keystrokes per block not timed: the first ones also wait for `dd` to start
READ = 64 * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def marker(word: str) -> tuple[str, bytes]:
    """A shell command that prints `WORD-END`, and those bytes: the command line's own echo
    (`WORD END`) never matches, so the marker is seen only once the command ran."""
    return f"printf '%s-%s\\n' {word} END", f"{word}-END\n".encode()


class Pipe(Protocol):
    name: str

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...


class DirectPipe:
    """The baseline: the app's own PTY session, read and written from this process."""

    name = "direct asyncssh"

    def __init__(self, session: TerminalSession) -> None:
        self.session = session

    async def send(self, data: bytes) -> None:
        await self.session.write(data)

    async def recv(self) -> bytes:
        data = await self.session.read()
        if not data:
            raise EOFError("the direct session ended")
        return data


class SocketPipe:
    """The browser's view: `/terminal` binary frames (text frames are control: skipped)."""

    name = "/terminal"

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def recv(self) -> bytes:
        while True:
            frame = await self.ws.recv()
            if isinstance(frame, bytes):
                return frame


async def read_until(pipe: Pipe, needle: bytes, limit: float = 60, seen: bytes = b"") -> int:
    """Bytes received up to and including the chunk that completes `needle` (which may have
    begun in `seen`, output already read)."""
    if needle in seen:
        return 0
    total, tail = 0, seen[-len(needle) :]
    async with asyncio.timeout(limit):
        while True:
            chunk = await pipe.recv()
            total += len(chunk)
            # Only the seam needs joining: no copy of a 64 KiB chunk per read.
            if needle in chunk or needle in tail + chunk[: len(needle)]:
                return total
            tail = (tail + chunk[-len(needle) :])[-len(needle) :]


async def prepare(pipe: Pipe) -> None:
    """Raw PTY, no prompt: each byte in comes back as one byte, output is counted as sent."""
    command, done = marker("READY")
    await pipe.send(f"stty raw -echo; PS1=; {command}\n".encode())
    await read_until(pipe, done)


async def keystrokes(pipe: Pipe, count: int) -> list[float]:
    """Seconds from sending one byte to reading it back, `count` times after a warm-up."""
    timings: list[float] = []
    while len(timings) < count:
        timings += await _echo_block(pipe, count - len(timings))
    return timings


async def _echo_block(pipe: Pipe, count: int) -> list[float]:
    """One `dd` echo run. Once in a debug run it ended early (cause not found): then the
    timings so far are kept and the caller starts another run for the rest."""
    start, started = marker("KEYS")
    end, ended = marker("ECHO")
    # `dd bs=1` reads and writes each byte with one syscall each (GNU `head` and others write
    # through stdio, which holds a tty's output until a newline). The mode is set in the same
    # line: bash may restore its own tty settings between commands.
    await pipe.send(f"stty raw -echo; {start}; dd bs=1 count={WARMUP + count} status=none; "
                    f"{end}\n".encode())  # fmt: skip
    await read_until(pipe, started)
    timings: list[float] = []
    async with asyncio.timeout(60 + count * 0.05):
        for i in range(WARMUP + count):
            key = string.ascii_lowercase[i % 26].encode()
            sent = time.perf_counter()
            await pipe.send(key)
            seen = b""
            while key not in seen:
                seen += await pipe.recv()
            if i >= WARMUP:
                timings.append(time.perf_counter() - sent)
            # `dd` ended: after the last byte its end marker may ride along with the echo;
            # before it, the run ended early.
            if seen != key and i + 1 < WARMUP + count:
                print(f"  ({pipe.name}: echo run ended after {i + 1} of {WARMUP + count} "
                      f"bytes; restarting: {seen[:40]!r})")  # fmt: skip
                await read_until(pipe, ended, seen=seen)
                return timings
    await read_until(pipe, ended, seen=seen)
    return timings


async def bulk(pipe: Pipe, path: Path, size: int) -> float:
    """Seconds until all of `path` (and the end marker) came back through `pipe`."""
    end, ended = marker("BULK")
    started = time.perf_counter()
    await pipe.send(f"stty raw -echo; cat {path}; {end}\n".encode())
    received = await read_until(pipe, ended, limit=600)
    elapsed = time.perf_counter() - started
    assert received >= size, (pipe.name, received, size)
    return elapsed


def output_file(path: Path, mib: int) -> int:
    """Base64 text of random bytes in 76-column lines (terminal-like, and no '-' in it)."""
    size = 0
    with path.open("wb") as out:
        while size < mib << 20:
            chunk = base64.encodebytes(os.urandom(57 * 16384))
            out.write(chunk)
            size += len(chunk)
    path.chmod(0o644)
    return size


def fresh_prefix() -> str:
    """A user prefix ("b" and four letters) that no existing account starts with: everything
    under it is deleted at the end."""
    taken = [line.split(":", 1)[0] for line in Path("/etc/passwd").read_text().splitlines()]
    taken += [line.split(":", 1)[0] for line in Path("/etc/group").read_text().splitlines()]
    while True:
        prefix = "b" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))
        if not any(name.startswith(prefix) for name in taken):
            return prefix


async def world(uow: Callable[[], UnitOfWork], kms: LocalKms, root: Path, groups: str,
                prefix: str, stack: AsyncExitStack) -> tuple[Principal, int, SshDialer]:  # fmt: skip
    """A node trusting the platform CA and one RUNNING allocation on it: (user, allocation id,
    the platform's dialer)."""
    ca_keys = [(await create_ca(uow(), kms, AesGcmCipher(), AsyncsshCaSigner())).public_key]
    node = stack.enter_context(running_node(root, report=EIGHT_H200, trusted_ca_keys=ca_keys))
    serve_user_keys(node)
    fake_devices(node, 8)
    fleet = fleet_settings(node.root, groups)
    settings = load_settings({"GPUCLOUD_ALLOCATION_USER_PREFIX": prefix}, needs=())
    fleet_kit = kit_for(uow, kms, fleet)
    kit = make_compute_kit(fleet, settings.compute, fleet_kit,
                           LedgerPolicy(default_hourly_spend_limit=10**12))  # fmt: skip
    stack.push_async_callback(kit.ops.aclose)  # type: ignore[attr-defined]
    ready = await check_node(fleet_kit, (await register(fleet_kit, node)).id)
    assert ready is not None and ready.state is NodeState.READY, ready
    sku = await add_sku(uow(), SkuSpec.create(
        name="bench-h200x1", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=399, currency="USD"))  # fmt: skip
    user, key_id = await customer(uow, f"{prefix}@bench.test")
    placed = await create_allocation(kit, user, sku.id, [key_id], "terminal", META)
    running = await advance(kit, placed.id)
    assert running is not None and running.state is AllocationState.RUNNING, running

    async def teardown() -> None:  # the account goes with the allocation, as in production
        await stop_allocation(kit, user, placed.id, META)
        await advance(kit, placed.id)

    stack.push_async_callback(teardown)
    dialer = fleet_kit.connector.dialer  # type: ignore[attr-defined]
    return user, placed.id, dialer


def serve_env(db_env: dict[str, str], key_file: Path, root: Path, groups: str, prefix: str,
              port: int) -> dict[str, str]:  # fmt: skip
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}, **db_env,
        "GPUCLOUD_HOST": "127.0.0.1", "GPUCLOUD_PORT": str(port),
        "GPUCLOUD_ALLOWED_ORIGINS": ORIGIN, "GPUCLOUD_KMS_KEY_FILE": str(key_file),
        "GPUCLOUD_LOG_LEVEL": "warning", "GPUCLOUD_ALLOCATION_USER_PREFIX": prefix,
        "GPUCLOUD_NODE_TRUSTED_CA_FILE": str(root / "trusted_ca_keys"),
        "GPUCLOUD_NODE_SSHD_DROPIN": "none", "GPUCLOUD_NODE_UDEV_RULES": "none",
        "GPUCLOUD_NODE_DEVICE_DIR": str(root / "dev"), "GPUCLOUD_NODE_DATA_DIR": str(root),
        "GPUCLOUD_NODE_HOME_DIR": str(root / "home"),
        "GPUCLOUD_NODE_GPU_GROUP_PREFIX": f"{groups}g", "GPUCLOUD_NODE_PLATFORM_GROUP": f"{groups}p",
    }  # fmt: skip


async def open_pipes(uow: Callable[[], UnitOfWork], redis: aioredis.Redis, namespace: str,
                     base: str, user: Principal, allocation_id: int, dialer: SshDialer,
                     stack: AsyncExitStack, no_deflate: bool) -> tuple[Pipe, Pipe]:  # fmt: skip
    """Both sessions, each in raw mode: (direct, /terminal)."""
    tickets = TerminalKit(RedisTicketStore(redis, namespace), frozenset({ORIGIN}))
    secret, ticket = await issue_ticket(uow(), tickets, user, allocation_id, ORIGIN,
                                        datetime.now(UTC))  # fmt: skip
    url = f"{base.replace('http', 'ws')}/terminal?ticket={secret}&cols={COLS}&rows={ROWS}"
    ws = await stack.enter_async_context(connect(
        url, origin=ORIGIN, compression=None if no_deflate else "deflate"))  # type: ignore[arg-type]  # fmt: skip
    # The same login the route makes: the allocation's user, a fresh CA certificate, a PTY.
    _, target = await terminal_target(uow(), ticket)
    session = await open_terminal(dialer, target, COLS, ROWS)
    stack.push_async_callback(session.close)
    pipes: tuple[Pipe, Pipe] = (DirectPipe(session), SocketPipe(ws))
    for pipe in pipes:
        await prepare(pipe)
    return pipes


async def measure(pipes: tuple[Pipe, Pipe], args: argparse.Namespace, path: Path,
                  size: int) -> None:  # fmt: skip
    keys: dict[str, list[float]] = {p.name: [] for p in pipes}
    seconds: dict[str, float] = {p.name: 0.0 for p in pipes}
    per_round = max(1, args.keystrokes // args.rounds)
    for r in range(args.rounds):
        # Alternate who goes first, so drift in the machine's load falls on both evenly.
        order = pipes if r % 2 == 0 else pipes[::-1]
        for pipe in order:
            keys[pipe.name] += await keystrokes(pipe, per_round)
        for pipe in order:
            seconds[pipe.name] += await bulk(pipe, path, size)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    d50, s50 = (statistics.median(keys[p.name]) * 1000 for p in pipes)
    d99, s99 = (percentile(keys[p.name], 0.99) * 1000 for p in pipes)
    count = len(keys[pipes[0].name])
    print(f"\nkeystroke round trip, {count} each (raw PTY, `dd bs=1` echoes):")
    print(f"  direct asyncssh: p50 {d50:.3f} ms, p99 {d99:.3f} ms")
    print(f"  /terminal:       p50 {s50:.3f} ms, p99 {s99:.3f} ms")
    print(f"  added at p50: {s50 - d50:.3f} ms (target < 2 ms); at p99: {s99 - d99:.3f} ms")
    mb = size * args.rounds / 1e6
    dr, sr = (mb / seconds[p.name] for p in pipes)
    print(f"\nbulk output, {args.rounds} x {size / 1e6:.1f} MB each (`cat` of base64 text):")
    print(f"  direct asyncssh: {dr:.1f} MB/s")
    print(f"  /terminal:       {sr:.1f} MB/s")
    print(f"  /terminal / direct: {sr / dr:.2f} (target >= 0.5)")


async def main(args: argparse.Namespace) -> int:
    # SIGTERM (`timeout`, a CI runner) cancels like Ctrl-C, so the cleanup below still runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    prefix = fresh_prefix()
    state = Path(tempfile.mkdtemp(prefix="gpucloud-bench-term-"))
    try:
        async with bench_database() as db, AsyncExitStack() as stack:
            namespace = db.env["GPUCLOUD_REDIS_NAMESPACE"]
            redis = aioredis.Redis.from_url(db.env["REDIS_URL"])
            stack.push_async_callback(redis.aclose)
            stack.push_async_callback(_forget, redis, namespace)
            engine = make_engine(db.env["DATABASE_URL"], pool_size=4)
            stack.push_async_callback(engine.dispose)
            uow: Callable[[], UnitOfWork] = lambda: SqlUnitOfWork(engine)  # noqa: E731
            root = stack.enter_context(open_node_root())
            groups = stack.enter_context(group_prefix())
            key_file = state / "keys.json"
            kms = LocalKms.create(key_file)
            user, allocation_id, dialer = await world(uow, kms, root, groups, prefix, stack)
            port = free_port()
            server = Process(["serve"], serve_env(db.env, key_file, root, groups, prefix, port),
                             state / "serve.log")  # fmt: skip
            stack.callback(server.stop)
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, base, server.proc, server.output)
            path = root / "bench-output.txt"
            size = await asyncio.to_thread(output_file, path, args.megabytes)
            print(f"gpucloud serve on {base}; sshd on loopback; one RUNNING allocation; "
                  f"websocket client {'not offering' if args.no_deflate else 'offering'} "
                  "permessage-deflate")  # fmt: skip
            pipes = await open_pipes(uow, redis, namespace, base, user, allocation_id, dialer,
                                     stack, args.no_deflate)  # fmt: skip
            await measure(pipes, args, path, size)
    finally:
        remove_users(prefix)
        shutil.rmtree(state, ignore_errors=True)
    return 0


async def _forget(redis: aioredis.Redis, namespace: str) -> None:
    """The run's tickets, slots and streams."""
    async for key in redis.scan_iter(match=f"{namespace}:*"):
        await redis.delete(key)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run, to check it works")
    p.add_argument("--keystrokes", type=int, default=2000, help="timed, per side")
    p.add_argument("--megabytes", type=int, default=64, help="MiB of output per bulk transfer")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds of both tests")
    p.add_argument("--no-deflate", action="store_true",
                   help="offer no permessage-deflate (browsers do offer it): shows its cost")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.keystrokes, args.megabytes, args.rounds = 200, 8, 2
    return args


if __name__ == "__main__":
    sys.exit(run_main(main(parse(sys.argv[1:]))))
