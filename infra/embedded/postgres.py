"""Embedded Postgres for development, using the binaries shipped in the pgserver wheel."""

import atexit
import signal
import warnings
from pathlib import Path
from urllib.parse import quote

from infra.embedded._process import checked_state_dir, leftover_process, stop_tree


class EmbeddedPostgres:
    """A private Postgres server with data in `state_dir/pgdata`, reachable by unix socket only."""

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = checked_state_dir(state_dir) / "pgdata"

    def start(self) -> str:
        """Start the server (initialising the data dir on first use) and return its URL."""
        # pgserver scans its bin dir when imported, so import it only when starting. Its class
        # body warns when XDG_RUNTIME_DIR is unset; the fallback (/tmp/runtime-<uid>) is fine.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from pgserver.postgres_server import PostgresServer

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        # As root, pgserver runs initdb/pg_ctl as a `pgserver` system user (created with useradd)
        # that owns pgdata. We stop the server ourselves: pgserver's own stop (atexit, refcounted
        # by pids in pgdata) is skipped whenever a crashed process is still listed, and its
        # atexit hook logs into streams that pytest has already closed.
        server = PostgresServer(self.pgdata, cleanup_mode=None)
        atexit.unregister(server._cleanup)
        socket_dir = server.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"

    def stop(self) -> None:
        """Stop the server and wait until the postmaster and all its backends have exited."""
        self._stop_leftover()

    def _stop_leftover(self) -> None:
        # Works from postmaster.pid alone, so it also stops a server left by a crashed run or by a
        # start() that was interrupted. SIGINT is postgres's "fast" shutdown.
        pid_file = self.pgdata / "postmaster.pid"
        proc = leftover_process(pid_file, "postgres", self.pgdata)
        if proc is not None:
            stop_tree(proc, signal.SIGINT, timeout=30)
        # A stale pid file naming a live unrelated process would make postgres refuse to start.
        pid_file.unlink(missing_ok=True)
