"""What authentication costs on a public read: the same query anonymous, with a Bearer API token
and with the session cookie, with the principal cache on (default) and off.

Fresh database (bench/common.py). Two `gpucloud serve` subprocesses on it, default settings
(result cache 5 s, Argon2 3 / 65536 KiB / 4, log info as JSON) apart from
GPUCLOUD_AUTH_CACHE_SECONDS: 5 (the default) and 0. One account is signed up over GraphQL and
mints an API token; every variant is checked to get the anonymous answer, and the credentials
to be recognised (`viewer`). In-process, it counts SQL per request and principal-cache hits for
each variant, and times one request straight into the ASGI app per variant (interleaved
batches, best of). Then one closed-loop load generator (bench/graphql_read.py's, plus the credential
header) drives the six targets in alternating rounds, each after a warm-up; it prints median
req/s, server CPU per request, and the paired per-round ratios bearer/anonymous and
cookie/anonymous (target >= 0.9). Also: the Argon2 parameters in force, one hash and one verify
with them, and `logIn` latency against the default server. Exit 1 if a check fails.

    .venv/bin/python -m bench.auth_overhead [--quick] [--duration S] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common
from bench.common import HOST, graphql_body
from bench.graphql_read import Sample, Server, counted_app, encode, start_server, stop_server
from bench.graphql_read import drive as drive_into

QUERY = (
    "query AuthBench { skus(first: 20) { edges { node { id name gpuModel "
    "hourlyPrice { amount currency } } } } }"
)
VIEWER = "query Viewer { viewer { id email } }"
VARIANTS = ("anonymous", "bearer", "cookie")
CACHE_ON, CACHE_OFF = "auth cache 5 s", "auth cache 0"
CONFIGS = {CACHE_ON: "5", CACHE_OFF: "0"}
# Each logIn costs an Argon2 verification (~0.1 s of CPU): keep the measured count modest. The
# bench servers raise the login limits, which would otherwise stop these at 30 a minute.
LOGIN_WARMUP = 2
LOGIN_LIMIT = 30


@dataclass
class Credentials:
    email: str
    password: str
    session_cookie: tuple[str, str]  # (name, value)
    csrf_cookie: tuple[str, str]
    csrf_token: str
    api_token: str

    def headers(self, variant: str) -> dict[str, str]:
        if variant == "bearer":
            return {"Authorization": f"Bearer {self.api_token}"}
        if variant == "cookie":
            # What a browser sends on a query: both cookies, no CSRF header (queries need none).
            jar = f"{self.session_cookie[0]}={self.session_cookie[1]}; "
            return {"Cookie": jar + f"{self.csrf_cookie[0]}={self.csrf_cookie[1]}"}
        return {}


async def drive(server: Server, request: bytes, seconds: float, concurrency: int) -> Sample:
    sample = Sample()
    await drive_into(server, request, seconds, concurrency, sample)
    return sample


# --- Argon2 ---------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def argon2_report(env: dict[str, str], repeats: int) -> dict[str, float]:
    from argon2 import PasswordHasher

    from infra.passwords import Argon2Hasher, Argon2Params
    from infra.settings import load_settings

    params = Argon2Params()
    settings = load_settings(env)  # no GPUCLOUD_ARGON2_*: the production defaults
    in_settings = (settings.argon2_time_cost, settings.argon2_memory_kib,
                   settings.argon2_parallelism)  # fmt: skip
    lib = PasswordHasher()
    print("\nArgon2id parameters in force by default:")
    print(f"  infra.passwords.Argon2Params(): time_cost {params.time_cost}, memory "
          f"{params.memory_kib} KiB ({params.memory_kib // 1024} MiB), parallelism "
          f"{params.parallelism}")  # fmt: skip
    print(f"  infra.settings defaults (GPUCLOUD_ARGON2_*): {in_settings[0]} / {in_settings[1]} / "
          f"{in_settings[2]}; argon2-cffi PasswordHasher(): {lib.time_cost} / "
          f"{lib.memory_cost} / {lib.parallelism}")  # fmt: skip
    same = in_settings == (params.time_cost, params.memory_kib, params.parallelism)
    print(f"  settings defaults equal Argon2Params defaults: {'yes' if same else 'NO'}")

    hasher = Argon2Hasher(params)
    password = "correct horse battery staple"
    stored = await hasher.hash(password)  # warm: first allocation of the 64 MiB
    hashes, verifies = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        await hasher.hash(password)
        hashes.append(time.perf_counter() - started)
        started = time.perf_counter()
        ok = await hasher.verify(stored, password)
        verifies.append(time.perf_counter() - started)
        assert ok
    result = {"hash_ms": 1000 * statistics.median(hashes),
              "verify_ms": 1000 * statistics.median(verifies)}  # fmt: skip
    print(f"  one hash:   median {result['hash_ms']:.1f} ms (min {1000 * min(hashes):.1f}, max "
          f"{1000 * max(hashes):.1f}; {repeats} runs, in-process, off the event loop as the "
          "app does it)")  # fmt: skip
    print(f"  one verify: median {result['verify_ms']:.1f} ms (min {1000 * min(verifies):.1f}, "
          f"max {1000 * max(verifies):.1f}; {repeats} runs)")  # fmt: skip
    print(f"  stored hash header: {stored.rsplit('$', 2)[0]}")
    return result


# --- account, checks ------------------------------------------------------------------------


def _cookies(response: Any) -> dict[str, str]:
    """Set-Cookie pairs, read by hand: the cookies are `Secure` (`__Host-`) and this is plain
    HTTP on loopback, where a client's cookie jar would rightly not send them back."""
    found = {}
    for line in response.headers.get_list("set-cookie"):
        name, _, rest = line.partition("=")
        found[name.strip()] = rest.split(";", 1)[0].strip()
    return found


async def sign_up(server: Server) -> Credentials:
    import httpx

    from tests.support.identity import (
        ALL_USER_SCOPES,
        CREATE_TOKEN,
        PASSWORD,
        SIGN_UP,
        unique_email,
    )

    email = unique_email("bench")
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        signed = await client.post("/graphql", json={"query": SIGN_UP, "variables": {
            "email": email, "password": PASSWORD}})  # fmt: skip
        payload = signed.json()["data"]["signUp"]
        if payload["__typename"] != "SessionPayload":
            raise RuntimeError(f"signUp failed: {payload}")
        jar = _cookies(signed)
        session = next((k, v) for k, v in jar.items() if v.startswith("gps_"))
        csrf = next((k, v) for k, v in jar.items() if k != session[0])
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        made = await client.post(
            "/graphql",
            json={"query": CREATE_TOKEN, "variables": {
                "name": "bench", "scopes": ALL_USER_SCOPES, "expiresAt": expires}},
            headers={"x-csrf-token": payload["csrfToken"],
                     "cookie": f"{session[0]}={session[1]}; {csrf[0]}={csrf[1]}"},
        )  # fmt: skip
        token = made.json()["data"]["createApiToken"]
        if token["__typename"] != "CreateApiTokenPayload":
            raise RuntimeError(f"createApiToken failed: {token}")
    return Credentials(email.lower(), PASSWORD, session, csrf, payload["csrfToken"],
                       token["secret"])  # fmt: skip


async def post(server: Server, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        got = await client.post("/graphql", content=graphql_body(query),
                                headers={"content-type": "application/json", **headers})  # fmt: skip
        return got.status_code, got.json()


async def check(servers: list[Server], creds: Credentials) -> bool:
    """Same answer for every variant on every server; the credentials are recognised."""
    ok = True
    _, reference = await post(servers[0], QUERY, {})
    edges = ((reference.get("data") or {}).get("skus") or {}).get("edges") or []
    if "errors" in reference or len(edges) != 20:
        print(f"ABORT: anonymous answer is not a page of 20: {str(reference)[:300]}")
        return False
    for server in servers:
        for variant in VARIANTS:
            status, doc = await post(server, QUERY, creds.headers(variant))
            same = status == 200 and doc == reference
            ok &= same
            viewer = ""
            if variant != "anonymous":
                _, who = await post(server, VIEWER, creds.headers(variant))
                email = ((who.get("data") or {}).get("viewer") or {}).get("email")
                ok &= email == creds.email
                viewer = f"; viewer = {email or who.get('errors')}"
            print(f"  {server.name:<16}{variant:<10} status {status}, same page as anonymous: "
                  f"{'yes' if same else 'NO'}{viewer}")  # fmt: skip
    return ok


async def interleaved_ms(
    app: Any, body: bytes, creds: Credentials, batches: int, size: int
) -> dict[str, float]:
    """Per variant, the best of `batches` batches of `size` requests (ms per request), the
    variants' batches interleaved in rotating order, so a busy spell on the shared machine hits
    all of them alike and the minimum is each one's undisturbed cost."""
    for variant in VARIANTS:
        for _ in range(20):
            await common.asgi_post(app, body, creds.headers(variant))
    best = dict.fromkeys(VARIANTS, float("inf"))
    for batch in range(batches):
        shift = batch % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            headers = creds.headers(variant)
            started = time.perf_counter()
            for _ in range(size):
                await common.asgi_post(app, body, headers)
            best[variant] = min(best[variant], (time.perf_counter() - started) / size)
    return {v: 1000 * t for v, t in best.items()}


async def count_sql(
    env: dict[str, str], creds: Credentials, n: int, batches: int, size: int
) -> None:
    """SQL per request and principal-cache hits, in-process, for each variant and config; then
    the in-process time of one request straight into the ASGI app (no sockets, no client)."""
    print(f"\nSQL per request (in-process app, result cache on as by default; {n} requests per "
          "variant after one first request; statements = SQLAlchemy cursor executes, other = "
          "asyncpg pre-ping/BEGIN/ROLLBACK):")  # fmt: skip
    body = graphql_body(QUERY)
    for config, seconds in CONFIGS.items():
        async with counted_app({**env, "GPUCLOUD_AUTH_CACHE_SECONDS": seconds}) as (
            app, client, counts,
        ):  # fmt: skip
            principals = app.state.resources.principals
            for variant in VARIANTS:
                headers = {"content-type": "application/json", **creds.headers(variant)}
                first = await client.post("/graphql", content=body, headers=headers)
                assert first.status_code == 200 and "errors" not in first.json(), first.text
                await asyncio.sleep(0.01)  # asyncpg's query logger reports through call_soon
                before, stats = dict(counts), dict(principals.stats)
                for _ in range(n):
                    response = await client.post("/graphql", content=body, headers=headers)
                    assert response.status_code == 200, response.text
                await asyncio.sleep(0.01)
                per = {k: (counts[k] - before[k]) / n for k in counts}
                hits = principals.stats["hit"] - stats["hit"]
                misses = principals.stats["miss"] - stats["miss"]
                print(f"  {config:<16}{variant:<10} statements {per['statements']:.1f}  other "
                      f"round trips {per['other']:.1f}  principal cache hit {hits} miss "
                      f"{misses}")  # fmt: skip
            # Log level warning here (no access line), so this is the app's own work.
            times = await interleaved_ms(app, body, creds, batches, size)
            print(f"  {config:<16}in-process ms/request, best of {batches} interleaved batches of "
                  f"{size}: " + ", ".join(
                f"{v} {times[v]:.3f}" for v in VARIANTS) + "; anonymous/bearer "
                f"{times['anonymous'] / times['bearer']:.2f}, anonymous/cookie "
                f"{times['anonymous'] / times['cookie']:.2f}")  # fmt: skip


async def auth_metrics(server: Server) -> str:
    """The server's own counts of authentications and credential-cache outcomes (/metrics)."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        text = (await client.get("/metrics")).text
    found = []
    for line in text.splitlines():
        if line.startswith(("gpucloud_auth_cache_total", "gpucloud_auth_requests_total")):
            name, _, value = line.rpartition(" ")
            found.append(f"{name.removeprefix('gpucloud_')} {float(value):.0f}")
    return "; ".join(found) or "none reported"


# --- logins ---------------------------------------------------------------------------------


async def login_latency(server: Server, creds: Credentials, n: int) -> list[float]:
    import httpx

    from tests.support.identity import LOG_IN

    body = graphql_body(LOG_IN, {"email": creds.email, "password": creds.password})
    times = []
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        for i in range(LOGIN_WARMUP + n):
            started = time.perf_counter()
            got = await client.post("/graphql", content=body,
                                    headers={"content-type": "application/json"})  # fmt: skip
            elapsed = time.perf_counter() - started
            payload = got.json()["data"]["logIn"]
            if payload["__typename"] != "SessionPayload":
                raise RuntimeError(f"logIn failed: {payload}")
            if i >= LOGIN_WARMUP:
                times.append(elapsed)
    return times


async def failed_login_latency(
    server: Server, creds: Credentials, n: int
) -> dict[str, list[float]]:
    """Wrong password for a real account vs an email nobody has, interleaved: the answers must
    be the same and take about as long (no way to learn which accounts exist)."""
    import uuid

    import httpx

    from tests.support.identity import LOG_IN

    times: dict[str, list[float]] = {"wrong password": [], "unknown email": []}
    answers = set()
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as client:
        for i in range(n + 1):
            for kind in times:
                email = (
                    creds.email if kind == "wrong password" else f"nobody-{uuid.uuid4().hex}@x.io"
                )
                body = graphql_body(LOG_IN, {"email": email, "password": "not the password 1"})
                started = time.perf_counter()
                got = await client.post("/graphql", content=body,
                                        headers={"content-type": "application/json"})  # fmt: skip
                elapsed = time.perf_counter() - started
                payload = got.json()["data"]["logIn"]
                answers.add((payload["code"], payload["message"]))
                if i > 0:  # the first pair warms up
                    times[kind].append(elapsed)
    if len(answers) != 1:
        raise RuntimeError(f"failed logins answered differently: {answers}")
    return times


# --- the run --------------------------------------------------------------------------------


@dataclass
class Target:
    server: Server
    variant: str
    request: bytes
    rounds: list[Sample] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.server.name} / {self.variant}"

    def median_rps(self) -> float:
        return statistics.median(s.rps for s in self.rounds)

    def pooled(self) -> Sample:
        total = Sample()
        for s in self.rounds:
            total.latencies += s.latencies
            total.errors += s.errors
            total.seconds += s.seconds
            total.generator_cpu += s.generator_cpu
            total.server_cpu += s.server_cpu
        return total

    def cpu_ms(self) -> float:
        total = self.pooled()
        return 1000 * total.server_cpu / max(1, len(total.latencies))


def print_table(targets: list[Target]) -> None:
    print(f"\n{'target':<29}{'req/s med':>10}{'min':>7}{'max':>7}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'requests':>10}{'errors':>7}{'server CPU ms/req':>19}{'gen CPU %':>10}")  # fmt: skip
    for t in targets:
        s = t.pooled()
        rps = [r.rps for r in t.rounds]
        print(f"{t.name:<29}{t.median_rps():>10.0f}{min(rps):>7.0f}{max(rps):>7.0f}"
              f"{s.percentile_ms(0.5):>8.2f}{s.percentile_ms(0.99):>8.2f}{len(s.latencies):>10}"
              f"{s.errors:>7}{t.cpu_ms():>19.3f}{100 * s.generator_cpu / s.seconds:>10.0f}")  # fmt: skip


def print_ratios(targets: list[Target], servers: list[Server]) -> dict[str, float]:
    found = {}
    print("\nratios (per round, paired: both targets measured on the same server in that round; "
          "the median across rounds is the figure; target >= 0.9 with the default cache):")  # fmt: skip
    for server in servers:
        mine = {t.variant: t for t in targets if t.server is server}
        anon = mine["anonymous"]
        for variant in ("bearer", "cookie"):
            per_round = [a.rps and b.rps / a.rps for a, b in zip(anon.rounds, mine[variant].rounds,
                                                                  strict=True)]  # fmt: skip
            ratio = statistics.median(per_round)
            cpu = anon.cpu_ms() / mine[variant].cpu_ms()
            found[f"{server.name} {variant}"] = ratio
            verdict = (("met" if ratio >= 0.9 else "NOT met") if server is servers[0]
                       else "no target: what the principal cache saves")  # fmt: skip
            print(f"  {server.name:<16}{variant}/anonymous throughput {ratio:.2f} ({verdict}; "
                  f"rounds {', '.join(f'{r:.2f}' for r in per_round)}); CPU per request "
                  f"anonymous/{variant} {cpu:.2f}")  # fmt: skip
    return found


async def load(args: argparse.Namespace, servers: list[Server], targets: list[Target]) -> None:
    print(f"\nload: {args.concurrency} keep-alive connections; first {args.warmup:g} s warm-up per "
          f"target, then {args.rounds} rounds of ({args.preroll:g} s unmeasured + "
          f"{args.duration:g} s measured) per target; the order of servers and of variants "
          "rotates between rounds")  # fmt: skip
    for t in targets:
        await drive(t.server, t.request, args.warmup, args.concurrency)
    print("  req/s per round, " + "  |  ".join(f"{s.name}: " + " / ".join(VARIANTS)
                                              for s in servers))  # fmt: skip
    for round_no in range(args.rounds):
        order = servers if round_no % 2 == 0 else servers[::-1]
        shift = round_no % len(VARIANTS)
        variants = VARIANTS[shift:] + VARIANTS[:shift]
        for server in order:
            for variant in variants:
                t = next(x for x in targets if x.server is server and x.variant == variant)
                await drive(server, t.request, args.preroll, args.concurrency)
                t.rounds.append(await drive(server, t.request, args.duration, args.concurrency))
        print(f"  round {round_no + 1:>2}: " + "  |  ".join(" / ".join(
            f"{t.rounds[-1].rps:5.0f}" for t in targets if t.server is server)
            for server in servers))  # fmt: skip


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    async with common.bench_database() as db:
        print(f"database {db.name}, {common.SKU_ROWS} SKUs; {os.cpu_count()} cores shared by the "
              "load generator, the servers and PostgreSQL")  # fmt: skip
        print(f"query: {QUERY}")
        await argon2_report(db.env, args.hash_runs)

        serve = [sys.executable, "-m", "gpucloud", "serve"]
        # Login limits raised only so the login timings below are not cut short; they are not
        # on the measured read path.
        info = {"GPUCLOUD_LOG_LEVEL": "info", "GPUCLOUD_LOG_FORMAT": "json",
                "GPUCLOUD_LOGIN_LIMIT_PER_IP": "1000",
                "GPUCLOUD_LOGIN_FAILURES_PER_ACCOUNT": "1000"}  # fmt: skip
        servers: list[Server] = []
        try:
            for name, seconds in CONFIGS.items():
                extra = {**info, "GPUCLOUD_AUTH_CACHE_SECONDS": seconds}
                servers.append(await start_server(name, serve, {**db.env, **extra}))
            await asyncio.sleep(0.5)  # let the event hubs subscribe: both caches wait for that
            creds = await sign_up(servers[0])
            print(f"\naccount {creds.email}: session cookie {creds.session_cookie[0]}, API token "
                  f"{creds.api_token[:8]}...")  # fmt: skip
            import asyncpg

            conn = await asyncpg.connect(db.env["DATABASE_URL"])
            try:
                stored = await conn.fetchval(
                    "SELECT password_hash FROM users WHERE email = $1", creds.email
                )
            finally:
                await conn.close()
            print(f"  its stored hash (made by the default server): {stored.rsplit('$', 2)[0]}")
            print("\nresponses:")
            if not await check(servers, creds):
                print("ABORT: a variant did not get the anonymous answer, or a credential was "
                      "not recognised")  # fmt: skip
                return 1
            await count_sql(db.env, creds, args.count, args.batches, args.batch_size)

            targets = [
                Target(server, variant, encode(server.port, graphql_body(QUERY),
                                               creds.headers(variant)))
                for server in servers for variant in VARIANTS
            ]  # fmt: skip
            await load(args, servers, targets)
            print_table(targets)
            print_ratios(targets, servers)
            print("\nthe servers' /metrics after the load (a miss per credential every cache TTL):")
            for server in servers:
                print(f"  {server.name}: {await auth_metrics(server)}")

            times = await login_latency(servers[0], creds, args.logins)
            print(f"\nlogIn latency ({servers[0].name} server, default Argon2 3 / 65536 KiB / 4; "
                  f"{args.logins} sequential logins after {LOGIN_WARMUP} warm-up, idle server, "
                  "HTTP round trip included):")  # fmt: skip
            print(f"  p50 {1000 * nearest_rank(times, 0.5):.1f} ms, p95 "
                  f"{1000 * nearest_rank(times, 0.95):.1f} ms (nearest rank), min "
                  f"{1000 * min(times):.1f}, max {1000 * max(times):.1f}")  # fmt: skip
            failed = await failed_login_latency(servers[1], creds, args.logins)
            print("\nfailed logIn latency (interleaved, same answer INVALID_CREDENTIALS for both):")
            medians = {}
            for kind, values in failed.items():
                medians[kind] = nearest_rank(values, 0.5)
                print(f"  {kind:<15} p50 {1000 * medians[kind]:.1f} ms, p95 "
                      f"{1000 * nearest_rank(values, 0.95):.1f} ms")  # fmt: skip
            ratio = medians["unknown email"] / medians["wrong password"]
            print(f"  ratio unknown/wrong p50: {ratio:.2f} (1.00 = indistinguishable)")
        finally:
            for server in servers:
                stop_server(server)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, help="measured seconds per target and round "
                        "(default 1)")  # fmt: skip
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 15)")
    parser.add_argument("--warmup", type=float, help="first warm-up per target (default 2 s)")
    parser.add_argument("--preroll", type=float, help="unmeasured seconds before each measured "
                        "stretch (default 0.25)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--logins", type=int, default=20, help="measured logIn calls (default "
                        f"20, at most {LOGIN_LIMIT - LOGIN_WARMUP})")  # fmt: skip
    parser.add_argument("--hash-runs", type=int, default=5, help="hashes and verifies timed")
    parser.add_argument("--count", type=int, default=20, help="requests per SQL count")
    parser.add_argument(
        "--batches",
        type=int,
        default=20,
        help="interleaved batches per variant, in-process timing (default 20)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=40,
        help="requests per batch, in-process timing (default 40)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=420.0,
        help="stop (cleaning up) after this many seconds (default 420)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run: 4 rounds of 0.5 s")
    args = parser.parse_args(argv)
    args.duration = args.duration or (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (4 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.preroll = args.preroll if args.preroll is not None else (0.2 if args.quick else 0.25)
    if not 1 <= args.logins <= LOGIN_LIMIT - LOGIN_WARMUP:
        parser.error(f"--logins must be 1 to {LOGIN_LIMIT - LOGIN_WARMUP}")
    return args


async def bounded(args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(args.time_limit):
            return await run(args)
    except TimeoutError:
        print(f"ABORT: over the time limit of {args.time_limit:g} s (servers stopped, database "
              "dropped)")  # fmt: skip
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_main(bounded(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
