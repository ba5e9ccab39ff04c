"""CORS for single-page apps served from another origin: the origins the platform already trusts
(GPUCLOUD_PUBLIC_URL and GPUCLOUD_ALLOWED_ORIGINS, as for websockets and CSRF) may call the API
from a browser with credentials; any other origin gets no Access-Control-* header at all.

Starlette's CORSMiddleware sends `Access-Control-Allow-Credentials: true` (and, on a refused
preflight, the allowed methods and headers) to every origin; this answers listed origins only.
A cookie-authenticated mutation still needs the CSRF header, which only a listed origin's
script can send (the preflight for it is refused elsewhere); the authenticator also refuses
the cookie's CSRF check when a request's Origin is not listed (gpucloud/auth.py).
"""

from __future__ import annotations

from collections.abc import Collection

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.http.websocket_origin import normalize_origin

from gpucloud.auth import CSRF_HEADER
from gpucloud.middleware import REQUEST_ID_HEADER

ALLOW_METHODS = "GET, POST"
# What the SPA sends: JSON bodies, a Bearer token, the CSRF token, a request id to correlate.
ALLOW_HEADERS = ", ".join(("authorization", "content-type", CSRF_HEADER, REQUEST_ID_HEADER))
EXPOSE_HEADERS = REQUEST_ID_HEADER
MAX_AGE_SECONDS = "600"
_VARY = "Origin"
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class Cors:
    def __init__(self, app: ASGIApp, origins: Collection[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)  # normalised (strawberry.http.websocket_origin)

    def listed(self, origin: str | None) -> bool:
        return origin is not None and normalize_origin(origin) in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self._preflight(origin, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header(_VARY)  # a cache must not serve one origin's answer to another
                if origin is not None and self.listed(origin):
                    out["access-control-allow-origin"] = origin
                    out["access-control-allow-credentials"] = "true"
                    out["access-control-expose-headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, send: Send) -> None:
        """Listed: 204 with what the SPA may send (the browser checks its request against it).
        Not listed: 403 with no Access-Control-* header, so the browser sends nothing."""
        headers: list[tuple[bytes, bytes]] = [(b"vary", _PREFLIGHT_VARY.encode())]
        if self.listed(origin):
            status, body = 204, b""
            headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", MAX_AGE_SECONDS.encode()),
            ]
        else:
            status = 403
            error = {
                "message": "This origin may not call the API from a browser.",
                "extensions": {"code": "ORIGIN_NOT_ALLOWED"},
            }
            body = orjson.dumps({"errors": [error]})
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
