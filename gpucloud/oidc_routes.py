"""Sign in with OpenID Connect: `/auth/oidc/login` sends the browser to the provider,
`/auth/oidc/callback` brings it back with a code.

The per-login secrets (state, nonce, PKCE verifier) stay server-side in Redis for ten minutes
and are usable once. A random binder cookie ties them to the browser that started the login,
so a callback URL planted in someone else's browser (login CSRF) finds no matching binder.
"""

from __future__ import annotations

import hashlib
import secrets as random
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from domain.audit.records import RequestMeta
from domain.identity.auth import RateLimited
from domain.identity.errors import OidcError, OidcErrorCode
from domain.identity.oidc import oidc_refused, sign_in_with_oidc
from domain.identity.secrets import same
from gpucloud.auth import ResponseCookies, request_meta
from gpucloud.resources import Resources

log = structlog.get_logger(__name__)

STATE_TTL_SECONDS = 600
BINDER_COOKIE = "gpucloud_oidc"
_AUDITED_HERE = frozenset(
    {OidcErrorCode.OIDC_STATE_INVALID, OidcErrorCode.OIDC_PROVIDER_ERROR,
     OidcErrorCode.OIDC_TOKEN_INVALID}
)  # fmt: skip


def _fail(code: OidcErrorCode, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"code": str(code), "message": message}}, status_code=status)


def _return_to(raw: str | None) -> str:
    """Only a path on this site: an absolute or scheme-relative URL would be an open redirect."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/"


def _key(res: Resources, state: str) -> str:
    return f"{res.settings.redis_namespace}:oidc:{hashlib.sha256(state.encode()).hexdigest()}"


def _meta(request: Request) -> RequestMeta:
    return request_meta(request, request.scope.get("state", {}).get("request_id"))


async def _rate_limited(res: Resources, meta: RequestMeta) -> Response | None:
    """Both routes count as login attempts of the client's address: the first stores state in
    Redis, the second costs a call to the provider."""
    limits = res.kit.limits
    retry = await res.kit.limiter.hit(f"login:ip:{meta.client_ip}", limits.login_per_ip,
                                      limits.login_ip_window)  # fmt: skip
    if retry is None:
        return None
    message = RateLimited(retry).problems[0].message
    return JSONResponse({"error": {"code": "RATE_LIMITED", "message": message}},
                        status_code=429, headers={"retry-after": str(retry)})  # fmt: skip


async def login(request: Request) -> Response:
    res: Resources = request.app.state.resources
    if res.oidc is None:
        return _fail(OidcErrorCode.OIDC_NOT_CONFIGURED, "OIDC sign-in is not enabled.", 404)
    limited = await _rate_limited(res, _meta(request))
    if limited is not None:
        return limited
    try:
        start = await res.oidc.start()
    except OidcError as exc:
        return _fail(exc.code, exc.problems[0].message, 502)
    binder = random.token_urlsafe(32)
    record = {
        "nonce": start.nonce,
        "verifier": start.code_verifier,
        "returnTo": _return_to(request.query_params.get("returnTo")),
        "binder": hashlib.sha256(binder.encode()).hexdigest(),
    }
    await res.redis.set(_key(res, start.state), orjson.dumps(record), ex=STATE_TTL_SECONDS)
    response = RedirectResponse(start.authorization_url, status_code=302)
    # Lax, not Strict: the provider sends the browser back with a top-level cross-site GET.
    response.set_cookie(BINDER_COOKIE, binder, max_age=STATE_TTL_SECONDS, path="/auth/oidc",
                        httponly=True, secure=res.settings.cookie_secure,
                        samesite="lax")  # fmt: skip
    return response


async def callback(request: Request) -> Response:
    res: Resources = request.app.state.resources
    meta = _meta(request)
    if res.oidc is None:
        return _fail(OidcErrorCode.OIDC_NOT_CONFIGURED, "OIDC sign-in is not enabled.", 404)
    limited = await _rate_limited(res, meta)
    if limited is not None:
        return limited
    try:
        response = await _complete(request, res, meta)
    except OidcError as exc:
        if exc.code in _AUDITED_HERE:  # account-level refusals were audited by the domain
            await oidc_refused(res.uow(), meta, exc.code)
        response = _fail(exc.code, exc.problems[0].message)
    response.delete_cookie(BINDER_COOKIE, path="/auth/oidc")
    return response


async def _complete(request: Request, res: Resources, meta: RequestMeta) -> Response:
    assert res.oidc is not None
    params = request.query_params
    state, code = params.get("state", ""), params.get("code", "")
    binder = request.cookies.get(BINDER_COOKIE, "")
    record = await _take_state(res, state, binder) if state and binder else None
    if record is None:
        log.warning("oidc.state_rejected", known=record is not None, binder=bool(binder))
        raise OidcError(OidcErrorCode.OIDC_STATE_INVALID,
                        "This sign-in link is not valid here; start again.")  # fmt: skip
    if params.get("error") or not code:
        log.warning("oidc.provider_refused", error=params.get("error"))
        raise OidcError(OidcErrorCode.OIDC_PROVIDER_ERROR, "The provider refused the sign-in.")
    identity = await res.oidc.finish(code, nonce=str(record["nonce"]),
                                     code_verifier=str(record["verifier"]))  # fmt: skip
    signed_in = await sign_in_with_oidc(
        res.uow(), res.kit, issuer=identity.issuer, subject=identity.subject,
        email=identity.email, email_verified=identity.email_verified, meta=meta,
        replacing_session=(await res.authenticator.http(request)).principal.session_id,
    )  # fmt: skip
    response = RedirectResponse(str(record["returnTo"]), status_code=303)
    ResponseCookies(response, res.authenticator.cookies, res.settings).set(signed_in)
    return response


async def _take_state(res: Resources, state: str, binder: str) -> dict[str, Any] | None:
    """The login's record, consumed, only for the browser holding its binder. A request
    without the binder does not consume it, so a leaked state cannot spoil the real login."""
    key = _key(res, state)
    raw = await res.redis.get(key)
    if raw is None:
        return None
    found: dict[str, Any] = orjson.loads(raw)
    if not same(hashlib.sha256(binder.encode()).hexdigest(), str(found.get("binder", ""))):
        return None
    # Once only: of two callbacks racing with the same state, one gets it.
    return found if await res.redis.delete(key) == 1 else None
