"""The Starlette application: routes, lifespan and the GraphQL view."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any, cast

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.websocket_origin import normalize_origin
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from domain.catalog.services import CATALOG_TOPIC
from domain.compute.changes import ALLOCATIONS_TOPIC
from domain.fleet.changes import FLEET_TOPIC
from domain.identity.kit import IDENTITY_TOPIC
from domain.notifications.notices import NOTIFICATIONS_TOPIC
from gpucloud import health, oidc_routes, terminal
from gpucloud.auth import CSRF_HEADER, CookieNames, ResponseCookies, request_meta
from gpucloud.cors import Cors
from gpucloud.draining import held
from gpucloud.graphiql import GraphiQLPage
from gpucloud.graphql_http import StrictHttpGraphQL
from gpucloud.live import LiveHandler
from gpucloud.middleware import RequestContext
from gpucloud.resources import OIDC_CALLBACK_PATH, Resources
from gpucloud.stripe_webhook import stripe_webhook
from infra.metrics import Metrics
from infra.nodes.keys import AsyncsshKeyCodec
from infra.settings import Settings
from resolvers.catalog import catalog_change_of
from resolvers.errors import shape_error
from resolvers.invalidation import follow
from resolvers.loaders import make_loaders
from resolvers.result_cache import ResultCache, result_cache_extension
from resolvers.root import Limits, build_schema
from resolvers.shared_reads import make_shared_reads, warm_notifications
from schema.context import AppContext
from schema.observability import Observer, operation_metrics, streamed_operation_metrics

_OPERATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_OPERATION_LABELS = 200
_KEY_CODEC = AsyncsshKeyCodec()  # stateless: one for every request
GRAPHQL_PATH = "/graphql"


class TextFrames(ASGIWebSocketAdapter):
    """Sends every graphql-transport-ws message as a text frame. Strawberry picks the frame type
    from `encode_json`'s result, which is bytes for fast HTTP bodies; but the protocol is JSON
    text, and graphql-ws, Apollo, gql and browsers refuse binary frames (or get Blobs)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GraphQLView(StrictHttpGraphQL):
    graphql_transport_ws_handler_class = LiveHandler
    websocket_adapter_class = TextFrames  # type: ignore[assignment]  # as Strawberry types its own
    connection_init_wait_timeout = timedelta(seconds=10)  # an idle socket may not linger unsigned
    ide: GraphiQLPage | None = None  # our own page, in place of Strawberry's CDN-loading one

    async def render_graphql_ide(self, request: Request) -> Response:
        assert self.ide is not None  # Strawberry asks only when graphql_ide is set
        return self.ide.page()

    async def get_context(self, request: Request | WebSocket, response: Any) -> AppContext:
        res: Resources = request.app.state.resources
        request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        context = AppContext(
            request_id=request_id,
            uow=res.uow,
            reads=res.reads,
            events=res.hub,
            loaders=make_loaders(res.uow, res.reads),
            shared=request.app.state.shared_reads,
            auth=res.kit,
            money=res.money,
            fleet=res.fleet,
            compute=res.compute,
            terminals=res.terminals,
            key_codec=_KEY_CODEC,
            meta=request_meta(request, request_id),
            request=request,
            response=response,
        )
        if isinstance(request, Request):  # websockets authenticate in connection_init
            found = await res.authenticator.http(request)
            context.principal = found.principal
            context.via_cookie, context.csrf_ok = found.via_cookie, found.csrf_ok
            context.credential_refusal = found.rejected
            context.cookies = ResponseCookies(response, res.authenticator.cookies, res.settings)
        return context

    async def on_ws_connect(self, context: AppContext) -> UnsetType | dict[str, object] | None:
        res: Resources = context.request.app.state.resources
        found = await res.authenticator.websocket(context.request, context.connection_params or {})
        # A credential sent and refused is an error, not a wish to be anonymous; with no
        # anonymous connections allowed, none is one too. graphql-transport-ws closes with 4403.
        if found.rejected is not None or not (
            found.principal.authenticated or res.settings.ws_max_anonymous_per_ip
        ):
            raise ConnectionRejectionError()
        # Counted before the ack: beyond the limit the handler closes with 4429 instead.
        if found.principal.user_id is not None:
            admission = await res.live.admit(found.principal.user_id)
            context.still_authorized = lambda: res.authenticator.still_valid(found)
        else:  # anonymous: public subscriptions only, each field's permission decides
            client = context.request.client
            admission = await res.live.admit_anonymous(client.host if client else "unknown")
        context.request.state.live_admission = admission
        context.principal = found.principal
        return cast(UnsetType, UNSET)  # acknowledge with no payload

    async def process_result(self, request: Request, result: Any) -> Any:
        # Parse errors end the operation before any extension sees the result; shape them with
        # the same rule (shaping is idempotent), so every error a client receives has a code.
        if result.errors:
            result.errors = [shape_error(error) for error in result.errors]
        return await super().process_result(request, result)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)  # HTTP bodies; websockets send text (TextFrames)


class Platform(Starlette):
    """The app, with one shortcut: graphql-transport-ws sockets go from the request context
    straight to the GraphQL view. Through Starlette they would pass its error and exception
    middleware, CORS (HTTP only) and the router, each of which stays suspended for as long as
    the socket is open: a tenth of an idle subscriber's memory (bench/fanout.py). None of them
    acts on an open websocket; everything else takes the usual way."""

    live_sockets: ASGIApp | None = None  # RequestContext around the GraphQL view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.live_sockets is not None and scope["type"] == "websocket":
            root = scope.get("root_path", "")
            path: str = scope["path"]
            if (path[len(root) :] if path.startswith(root) else path) == GRAPHQL_PATH:
                scope["app"] = self  # as Starlette sets it: the view reads app.state
                await self.live_sockets(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _observer(metrics: Metrics) -> Observer:
    seen: set[str] = set()

    def observe(operation: str, outcome: str, seconds: float) -> None:
        # Operation names come from clients: bound the label set so a scraper cannot be flooded.
        if not _OPERATION_NAME.match(operation):
            operation = "invalid"
        elif operation not in seen:
            if len(seen) >= _MAX_OPERATION_LABELS:
                operation = "other"
            else:
                seen.add(operation)
        metrics.graphql_requests.labels(operation, outcome).inc()
        metrics.graphql_latency.labels(operation).observe(seconds)

    return observe


def create_app(settings: Settings) -> Starlette:
    """Build the app; nothing connects until the lifespan starts."""
    metrics = Metrics()
    observe = _observer(metrics)
    extensions = [operation_metrics(observe)]
    stream_extensions = [streamed_operation_metrics(observe)]  # no result cache for these
    cache = (
        ResultCache(ttl=settings.result_cache_seconds)
        if settings.result_cache_seconds > 0
        else None
    )
    if cache is not None:
        extensions.append(result_cache_extension(cache))
        metrics.state.result_cache_stats = cache.stats
    schema = build_schema(
        Limits(settings.max_query_depth, settings.max_aliases, settings.max_query_tokens),
        extra_extensions=extensions,
        stream_extensions=stream_extensions,
    )
    # The platform's origins: its own and those of SPAs served elsewhere, normalised as browsers
    # send them. They may open websockets, call over CORS and use the session cookie.
    origins = [
        found
        for origin in (settings.public_url, *settings.allowed_origins)
        if (found := normalize_origin(origin)) is not None
    ]
    graphql = GraphQLView(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        allow_queries_via_get=False,  # GET serves the IDE only; nothing executes on GET
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        # Strawberry refuses cross-origin websocket handshakes itself (HTTP 403): give it the
        # origins the authenticator allows, or a configured SPA origin could never connect.
        allowed_origins=origins,
    )
    ide_routes: list[BaseRoute] = []
    if settings.graphiql:  # when off, GET /graphql and every asset URL answer 404
        graphql.ide = GraphiQLPage(CookieNames.for_settings(settings).csrf, CSRF_HEADER)
        ide_routes.append(graphql.ide.route())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = app.state.resources = await Resources.open(settings, metrics)
        shared = app.state.shared_reads = make_shared_reads(resources.uow)
        # A catalog event's change is read once, before its subscribers wake (infra/pubsub.py).
        resources.hub.warm_before_delivery(
            CATALOG_TOPIC, lambda message: catalog_change_of(shared, message)
        )
        # A poke's notification reads are made for every subscription it names, likewise.
        resources.hub.warm_before_delivery(
            NOTIFICATIONS_TOPIC, lambda message: warm_notifications(shared, message)
        )
        followers = []
        if cache is not None:  # a disabled cache needs no invalidation stream
            cache.live_epoch = lambda: resources.hub.epoch
            # Catalog events change SKUs; fleet events (nodes becoming ready or not) and
            # allocation events (GPUs placed, freed at teardown) change `Sku.available`. The
            # cache's TTL bounds how stale it can be when events are late (worker down).
            for topic in (CATALOG_TOPIC, FLEET_TOPIC, ALLOCATIONS_TOPIC):
                followers.append(
                    asyncio.create_task(
                        follow(resources.hub, topic, lambda _: cache.invalidate()),
                        name=f"result-cache-{topic}",
                    )
                )
        followers.append(
            asyncio.create_task(
                follow(resources.hub, IDENTITY_TOPIC, resources.identity_changed),
                name="identity-changes",
            )
        )
        try:
            yield
        finally:
            for follower in followers:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await resources.close()

    app = Platform(
        routes=[
            Route(GRAPHQL_PATH, graphql, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, graphql),  # reached through Platform's shortcut
            WebSocketRoute("/terminal", held(terminal.terminal)),
            Route("/auth/oidc/login", oidc_routes.login, methods=["GET"]),
            Route(OIDC_CALLBACK_PATH, oidc_routes.callback, methods=["GET"]),
            Route("/stripe/webhook", stripe_webhook, methods=["POST"]),
            Route("/healthz", health.healthz),
            Route("/readyz", health.readyz),
            Route("/metrics", health.metrics),
            *ide_routes,
        ],
        lifespan=lifespan,
    )
    app.add_middleware(Cors, origins=origins)
    app.add_middleware(RequestContext, metrics=metrics)  # outermost: preflights get an id too
    app.live_sockets = RequestContext(graphql, metrics=metrics)
    return app
