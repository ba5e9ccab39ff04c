"""The `gpucloud` command line: serve, worker, migrate, dev, export-schema, sku, admin, audit,
ledger, billing, keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gpucloud.config import settings_or_exit

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "schema.graphql"


def cmd_serve(args: argparse.Namespace) -> int:
    import contextlib
    import gc
    import math

    import uvicorn

    from gpucloud.app import create_app
    from gpucloud.serving import GracefulServer
    from gpucloud.ws_protocol import LeanWebSocketProtocol

    settings = settings_or_exit()
    app = create_app(settings)
    # Thousands of open sockets are thousands of long-lived objects, and the default collector
    # thresholds re-scan them every few events: a third of a 5,000-subscriber fan-out's time and
    # most of its tail (bench/RESULTS.md). Collect young objects less often, and leave what the
    # import made to the permanent generation.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,  # our logging setup renders uvicorn's lines as JSON too
        access_log=False,  # the request-context middleware logs each request with its id
        lifespan="on",
        # After the sockets had their grace period to close (GracefulServer), in-flight
        # requests get as long again to finish.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)),
        # No permessage-deflate: compressing every frame for every socket cost two thirds of
        # the CPU of a busy terminal (bench/terminal.py) and repeats per subscriber on fan-out;
        # terminal bytes and small JSON events gain little from it.
        ws_per_message_deflate=False,
        ws=LeanWebSocketProtocol,  # uvicorn's own, holding less per idle socket
    )
    server = GracefulServer(config, app, settings.shutdown_grace_seconds)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # 3: uvicorn's "startup failed"


def cmd_worker(args: argparse.Namespace) -> int:
    from jobs.worker import run_worker

    return run_worker(settings_or_exit())


def cmd_migrate(args: argparse.Namespace) -> int:
    from infra import migrate

    settings = settings_or_exit(needs=("DATABASE_URL",))
    if args.downgrade:
        migrate.downgrade(settings.database_url, args.downgrade)
    else:
        migrate.upgrade(settings.database_url, args.revision)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from gpucloud.dev import run_dev

    return run_dev()


def cmd_export_schema(args: argparse.Namespace) -> int:
    from resolvers.root import build_schema

    sdl = build_schema().as_str().rstrip() + "\n"
    target = Path(args.path)
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != sdl:
            print(
                f"gpucloud: {target} is out of date; run `gpucloud export-schema`", file=sys.stderr
            )
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(sdl)
    print(f"wrote {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gpucloud import admin_cli, ca_cli, keys_cli, money_cli, sku_cli

    parser = argparse.ArgumentParser(prog="gpucloud", description="GPU cloud backend.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP API (GraphQL, health, metrics)",
                           description="Run the HTTP API with uvicorn.")  # fmt: skip
    serve.add_argument("--host", help="bind address (default: GPUCLOUD_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: GPUCLOUD_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run the job worker and the outbox relay",
                            description="Run Dramatiq actors and the outbox relay.")  # fmt: skip
    worker.set_defaults(func=cmd_worker)

    mig = sub.add_parser("migrate", help="apply database migrations",
                         description="Upgrade the database to a revision (default: head).")  # fmt: skip
    mig.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    mig.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead (e.g. base)")
    mig.set_defaults(func=cmd_migrate)

    dev = sub.add_parser("dev", help="run everything locally (embedded servers when URLs are unset)",
                         description="Start PostgreSQL and Redis if needed, migrate, seed, "
                                     "then run the API and the worker until Ctrl-C.")  # fmt: skip
    dev.set_defaults(func=cmd_dev)

    exp = sub.add_parser("export-schema", help="write the GraphQL schema (SDL) to a file",
                         description="Export the GraphQL schema; --check fails on drift.")  # fmt: skip
    exp.add_argument("--path", default=str(SCHEMA_FILE), help="target file")
    exp.add_argument("--check", action="store_true", help="fail if the file differs")
    exp.set_defaults(func=cmd_export_schema)

    sku_cli.add_parser(sub)
    admin_cli.add_parsers(sub)
    money_cli.add_parsers(sub)
    keys_cli.add_parsers(sub)
    ca_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
