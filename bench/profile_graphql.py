"""Where one GraphQL read's CPU goes: in-process timings of its parts, then cProfile.

Makes a throwaway database like bench/graphql_read.py (bench/common.py), then, in-process with
the result cache off (so every request executes), times the whole ASGI app, `schema.execute`,
`schema.execute` over a page held in memory, and the repository call alone; then times the app
with the cache on and the entry warm (a cache hit), for comparison; then runs cProfile over N
executions of `schema.execute` and of the ASGI app and prints the share of each package and the
top functions.

    .venv/bin/python -m bench.profile_graphql [--runs N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.common import QUERY, ROOT, asgi_post, bench_database, graphql_body, run_main, running_app


def _package(filename: str) -> str:
    """Group profile rows by where the code lives: a site-package, our layer, or the stdlib."""
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(str(ROOT)):
        return "ours: " + filename[len(str(ROOT)) + 1 :].split("/", 1)[0]
    return "stdlib"


def _report_profile(title: str, prof: cProfile.Profile, runs: int) -> None:
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _, _), row in raw.items():
        by_package[_package(filename)] += row[2]
    print(f"\n== profile: {title}, {runs} runs, {1000 * total / runs:.2f} ms/run under cProfile")
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {100 * seconds / total:5.1f}%  {name}")
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)


class _MemoryUow:
    """A unit of work whose repository returns one page held in memory: timing the schema with
    it shows what GraphQL execution costs once the database is out of the picture."""

    def __init__(self, page: Any) -> None:
        self.skus = self
        self._page = page

    async def __aenter__(self) -> _MemoryUow:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def list(self, *_: object) -> Any:
        return self._page


async def _best_ms(once: Callable[[], Awaitable[None]], runs: int) -> float:
    """Best of five batches: the least-disturbed figure on a shared 2-core machine."""
    for _ in range(50):  # warm the parser/validation caches, the pool and the result cache
        await once()
    batch = max(1, runs // 5)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(batch):
            await once()
        best = min(best, (time.perf_counter() - started) / batch)
    return 1000 * best


async def profile(env: dict[str, str], runs: int) -> None:
    from starlette.routing import Route

    from domain.catalog import services
    from domain.catalog.sku import SkuFilter
    from domain.pagination import PageRequest
    from resolvers.loaders import make_loaders
    from schema.context import AppContext

    body = graphql_body(QUERY)
    async with (
        running_app({**env, "GPUCLOUD_RESULT_CACHE_SECONDS": "0"}) as app,
        running_app({**env, "GPUCLOUD_RESULT_CACHE_SECONDS": "60"}) as cached_app,
    ):
        # The schema the app serves, with its extensions (limits, metrics).
        view: Any = next(
            r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/graphql"
        )
        res = app.state.resources
        page = await services.list_skus(res.uow(), SkuFilter(), PageRequest(50, None))

        async def execute(uow: Any = res.uow) -> None:
            context = AppContext("bench", uow, res.hub, make_loaders(res.uow))
            result = await view.schema.execute(QUERY, context_value=context)
            assert not result.errors, result.errors

        async def execute_from_memory() -> None:
            await execute(lambda: _MemoryUow(page))

        async def repository_only() -> None:
            await services.list_skus(res.uow(), SkuFilter(), PageRequest(50, None))

        async def call_app() -> None:
            await asgi_post(app, body)

        async def call_cached_app() -> None:
            await asgi_post(cached_app, body)

        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("ASGI app (middleware + view + execute), cache off", call_app),
            ("schema.execute", execute),
            ("schema.execute, page from memory (no DB)", execute_from_memory),
            ("services.list_skus (uow + SQL + rows to entities)", repository_only),
            ("ASGI app, cache on, every request a hit", call_cached_app),
        ]
        print(f"\n== in-process timings, best of 5 batches of {max(1, runs // 5)}, no profiler:")
        for title, once in parts:
            print(f"  {await _best_ms(once, runs):6.3f} ms  {title}")
        stats = cached_app.state.resources.metrics.state.result_cache_stats
        print(f"  (result cache of the cache-on app: {stats})")
        print("  (cProfile counts every resumption of a coroutine as a call: ncalls of async "
              "functions are inflated)")  # fmt: skip
        for title, once in (parts[1], parts[0]):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(runs):
                await once()
            prof.disable()
            _report_profile(title, prof, runs)


async def run(args: argparse.Namespace) -> int:
    async with bench_database() as db:
        print(f"database {db.name}")
        await profile(db.env, args.runs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=500, help="executions per timing/profile")
    return run_main(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
