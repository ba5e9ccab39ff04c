"""Postgres and Redis run as local child processes, so `make run` needs no installed services."""

from infra.embedded._process import alive, checked_state_dir
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.redis import EmbeddedRedis

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "alive", "checked_state_dir"]
