"""HTTP and websocket authentication: Bearer tokens, session and CSRF cookies, Origin checks.

A request is authenticated by `Authorization: Bearer gpc_...` (third parties) or by the
session cookie (the SPA). Tokens never travel in query strings. Cookie-authenticated mutations
also need the CSRF header (see resolvers.guards.CsrfGuard); websockets, which browsers open
without custom headers, are checked against the allowed Origins instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.http.websocket_origin import normalize_origin

from domain.audit.records import RequestMeta
from domain.identity import auth, secrets
from domain.identity.errors import Refusal
from domain.identity.kit import AuthKit, SignedIn
from domain.identity.principal import ANONYMOUS, Principal
from gpucloud.principal_cache import PrincipalCache
from infra.metrics import Metrics
from infra.settings import Settings

CSRF_HEADER = "x-csrf-token"
_RETRY = object()  # a shared lookup that waiters must not trust: they look up for themselves


def request_meta(conn: HTTPConnection, request_id: str | None) -> RequestMeta:
    """Where a request came from, as audit rows record it."""
    client = conn.client
    return RequestMeta(
        request_id=request_id,
        client_ip=None if client is None else client.host,
        user_agent=conn.headers.get("user-agent"),
    )


@dataclass(frozen=True)
class CookieNames:
    session: str
    csrf: str

    @classmethod
    def for_settings(cls, settings: Settings) -> CookieNames:
        # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only
        # and path=/, so a sibling subdomain cannot plant or shadow it.
        prefix = "__Host-" if settings.cookie_secure else ""
        return cls(f"{prefix}gpucloud_session", f"{prefix}gpucloud_csrf")


@dataclass
class Authenticated:
    principal: Principal = ANONYMOUS
    via_cookie: bool = False
    csrf_ok: bool = False
    rejected: Refusal | None = None  # a credential was presented and refused: why
    secret: str | None = None
    kind: str | None = None  # "token" or "session": how to check the secret again later


class ResponseCookies:
    """The context's `SessionCookies`: writes Set-Cookie headers on the GraphQL response."""

    def __init__(self, response: Response, names: CookieNames, settings: Settings) -> None:
        self._response, self._names, self._settings = response, names, settings
        self._samesite: Literal["lax", "strict"] = (
            "strict" if settings.cookie_samesite == "strict" else "lax"
        )

    def set(self, signed_in: SignedIn) -> None:
        max_age = int((signed_in.expires_at - datetime.now(UTC)).total_seconds())
        common: dict[str, Any] = {
            "max_age": max_age,
            "path": "/",
            "secure": self._settings.cookie_secure,
            "samesite": self._samesite,
        }
        self._response.set_cookie(self._names.session, signed_in.session_secret, httponly=True,
                                  **common)  # fmt: skip
        # Readable by the SPA's script, which echoes it in the X-CSRF-Token header.
        self._response.set_cookie(self._names.csrf, signed_in.csrf_token, httponly=False, **common)

    def clear(self) -> None:
        for name, httponly in ((self._names.session, True), (self._names.csrf, False)):
            self._response.delete_cookie(name, path="/", secure=self._settings.cookie_secure,
                                         httponly=httponly,
                                         samesite=self._samesite)  # fmt: skip


class Authenticator:
    def __init__(self, kit: AuthKit, uow: Any, cache: PrincipalCache, settings: Settings,
                 metrics: Metrics) -> None:  # fmt: skip
        self.kit, self.uow, self.cache, self.settings = kit, uow, cache, settings
        self._count = metrics.auth_requests
        self._inflight: dict[bytes, asyncio.Future[Principal | object | None]] = {}
        self.cookies = CookieNames.for_settings(settings)
        # Normalised as Strawberry's own handshake check does (case, default ports), so the
        # two checks agree on every origin.
        self.allowed_origins = {
            found
            for origin in (settings.public_url, *settings.allowed_origins)
            if (found := normalize_origin(origin)) is not None
        }

    async def _principal(self, secret: str, kind: str) -> Principal | Refusal:
        key = secrets.hash_secret(secret)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        # One lookup per credential at a time: when an entry expires under load, the other
        # requests with the same credential wait for it instead of all querying.
        pending = self._inflight.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            if isinstance(shared, (Principal, Refusal)):
                return shared
            return await self._principal(secret, kind)  # stale: one of us looks up again
        leader: asyncio.Future[Principal | Refusal | object] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = leader
        generation = self.cache.generation
        result: Principal | Refusal | object = _RETRY
        try:
            found = await self._lookup(secret, kind, key, generation)
            # Shared only if no identity change arrived meanwhile (the answer may be stale).
            result = found if generation == self.cache.generation else _RETRY
            return found
        finally:
            del self._inflight[key]
            leader.set_result(result)

    async def _lookup(
        self, secret: str, kind: str, key: bytes, generation: int
    ) -> Principal | Refusal:
        if kind == "token":
            found = await auth.authenticate_token(self.uow(), secret)
        else:
            found = await auth.authenticate_session(self.uow(), self.kit, secret)
        if isinstance(found, Principal):  # refusals are not cached: they are rare and cheap
            self.cache.put(key, found, generation)
        return found

    async def bearer(self, value: str) -> Authenticated:
        scheme, _, secret = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return Authenticated(rejected=Refusal.INVALID)
        found = await self._principal(secret.strip(), "token")
        if isinstance(found, Refusal):
            return Authenticated(rejected=found)
        return Authenticated(found, secret=secret.strip(), kind="token")

    async def http(self, conn: HTTPConnection) -> Authenticated:
        found = await self._http(conn)
        if "authorization" in conn.headers:
            credential = "bearer"
        else:
            credential = "cookie" if self.cookies.session in conn.cookies else "none"
        outcome = "rejected" if found.rejected else "ok" if found.kind else "anonymous"
        self._count.labels(credential, outcome).inc()
        return found

    async def _http(self, conn: HTTPConnection) -> Authenticated:
        header = conn.headers.get("authorization")
        if header is not None:
            return await self.bearer(header)  # an explicit credential wins over the cookie
        secret = conn.cookies.get(self.cookies.session)
        if not secret:
            return Authenticated()
        found = await self._principal(secret, "session")
        if isinstance(found, Refusal):
            return Authenticated(rejected=found)
        sent = conn.headers.get(CSRF_HEADER, "")
        csrf_ok = (
            bool(sent)
            and secrets.same(sent, conn.cookies.get(self.cookies.csrf, ""))
            and secrets.same(sent, secrets.csrf_token_for(secret))
            # A browser names the page's origin; one the platform does not list may not act
            # with the cookie even if it got hold of the token (CORS keeps its script from
            # sending the header anyway). Clients that send no Origin are not browsers.
            and ("origin" not in conn.headers or self.origin_allowed(conn))
        )
        return Authenticated(found, via_cookie=True, csrf_ok=csrf_ok, secret=secret,
                             kind="session")  # fmt: skip

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        origin = conn.headers.get("origin")
        return origin is not None and normalize_origin(origin) in self.allowed_origins

    async def websocket(self, conn: HTTPConnection, params: dict[str, Any]) -> Authenticated:
        found = await self._websocket(conn, params)
        outcome = "rejected" if found.rejected else "ok" if found.kind else "anonymous"
        self._count.labels(f"websocket_{found.kind or 'none'}", outcome).inc()
        return found

    async def _websocket(self, conn: HTTPConnection, params: dict[str, Any]) -> Authenticated:
        """`connection_init` may carry {"authorization": "Bearer gpc_..."}; otherwise the
        session cookie counts, and only from an allowed Origin (cross-site websocket
        hijacking would otherwise ride on the cookie)."""
        value = params.get("authorization") or params.get("Authorization")
        if isinstance(value, str):
            return await self.bearer(value)
        secret = conn.cookies.get(self.cookies.session)
        if not secret or not self.origin_allowed(conn):
            return Authenticated(rejected=Refusal.INVALID if secret else None)
        found = await self._principal(secret, "session")
        if isinstance(found, Refusal):
            return Authenticated(rejected=found)
        return Authenticated(found, secret=secret, kind="session")

    async def still_valid(self, found: Authenticated) -> bool:
        """Whether a long-lived connection's credential still stands (not logged out, revoked,
        expired or suspended); cheap, through the principal cache."""
        if found.secret is None or found.kind is None:
            return False
        return isinstance(await self._principal(found.secret, found.kind), Principal)
