"""`gpucloud serve`'s uvicorn server: on SIGTERM it stops accepting, lets long-lived sockets
close themselves with their documented codes (gpucloud/draining.py), then shuts down as uvicorn
does."""

from __future__ import annotations

import socket

import structlog
import uvicorn
from starlette.applications import Starlette

log = structlog.get_logger(__name__)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, grace: float) -> None:
        super().__init__(config)
        self._app, self._grace = app, grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first (uvicorn does it again, harmlessly), so no socket opens while
        # the open ones are told to close.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        resources = getattr(self._app.state, "resources", None)  # None: the lifespan failed
        if resources is not None and not self.force_exit:
            draining = resources.draining
            log.info("server.draining", open_sockets=draining.open, grace_seconds=self._grace)
            if not await draining.drain(self._grace):
                log.warning("server.drain_incomplete", open_sockets=draining.open)
        await super().shutdown(sockets)
