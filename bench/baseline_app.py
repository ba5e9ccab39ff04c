"""The baseline for `bench/graphql_read.py`: the same page of SKUs with no GraphQL in the way.

A minimal Starlette app over an asyncpg pool. Its one endpoint runs one SQL statement and
returns the JSON document that `query Bench { skus(first: 50) { ... } }` returns from the real
API, byte for byte (the bench checks that before timing). It is what the answer costs in this
stack without schema validation, resolvers, the unit of work or the middleware.

Run: `DATABASE_URL=postgresql://... python -m bench.baseline_app --port 8001`
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.pagination import encode_cursor

PAGE_SIZE = 50

# Same rows as SqlSkuRepository.list with the default filter (status ACTIVE), one extra row
# fetched to learn whether a next page exists, exactly as the repository does.
SQL = """
SELECT id, name, gpu_model, gpu_count, vcpus, ram_gib, disk_gib, region,
       hourly_price_minor, currency, status
FROM skus
WHERE status = 'active'
ORDER BY id
LIMIT $1
"""


def global_id(type_name: str, key: int) -> str:
    # schema.relay.to_global_id, restated so the baseline does not import strawberry.
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


def document(rows: Sequence[Any], first: int) -> dict[str, Any]:
    """The GraphQL response body, keys in the order the query selects them."""
    edges = [
        {
            "cursor": encode_cursor(row["id"]),
            "node": {
                "id": global_id("Sku", row["id"]),
                "name": row["name"],
                "gpuModel": row["gpu_model"],
                "gpuCount": row["gpu_count"],
                "vcpus": row["vcpus"],
                "ramGib": row["ram_gib"],
                "diskGib": row["disk_gib"],
                "region": row["region"],
                "hourlyPrice": {
                    "amountMinor": row["hourly_price_minor"],
                    "currency": row["currency"],
                },
                "status": row["status"].upper(),  # GraphQL enums travel by name
            },
        }
        for row in rows[:first]
    ]
    page_info = {
        "hasNextPage": len(rows) > first,
        "endCursor": edges[-1]["cursor"] if edges else None,
    }
    return {"data": {"skus": {"edges": edges, "pageInfo": page_info}}}


def create_app(database_url: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Sized like the real engine (pool_size 10 + max_overflow 10), so neither side queues.
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
        try:
            yield
        finally:
            await app.state.pool.close()

    async def skus(request: Request) -> Response:
        await request.body()  # the query is fixed; read it so both servers receive the same work
        rows = await request.app.state.pool.fetch(SQL, PAGE_SIZE + 1)
        return Response(orjson.dumps(document(rows, PAGE_SIZE)), media_type="application/json")

    return Starlette(routes=[Route("/graphql", skus, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Baseline server for bench/graphql_read.py.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The same uvicorn settings as `gpucloud serve` (gpucloud/cli.py): one process, the default
    # ("auto": uvloop + httptools) loop and HTTP implementation, no access log.
    uvicorn.run(
        create_app(os.environ["DATABASE_URL"]),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
