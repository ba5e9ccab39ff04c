"""Sign in with OIDC: the relying-party side of the authorization-code flow with PKCE.

Authlib builds the authorization URL and exchanges the code; joserfc verifies the ID token
against the provider's published keys. Every failure becomes an `OidcError` with a generic
message; the reason goes to the log (never token contents), so a forged callback learns
nothing from the response.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import authlib.deprecate
import httpx
import structlog
from authlib.common.errors import AuthlibBaseError
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from domain.identity.errors import OidcError, OidcErrorCode

# Authlib prefers the `httpx2` package and warns once, at import, when it falls back to
# `httpx`, which is what we pin. `authlib.deprecate` turns its warnings to "always" when first
# imported, so it is imported above, before this filter, which then wins for this one import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = structlog.get_logger(__name__)

CLOCK_SKEW_SECONDS = 60
JWKS_MIN_REFETCH_SECONDS = 30.0  # an unknown kid refetches the keys, but no more often than this
JWKS_MAX_AGE_SECONDS = 3600.0  # so a key the provider withdrew stops being trusted
# Only public-key algorithms: "none" and HS* (a shared secret, which a provider's public key
# must never be mistaken for) are refused whatever the discovery document claims.
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class OidcStart:
    authorization_url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class OidcIdentity:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass(frozen=True)
class _Provider:
    """What we use of the provider's discovery document."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    signing_algs: frozenset[str]
    auth_methods: frozenset[str]


def _strings(value: object) -> frozenset[str]:
    return (
        frozenset(v for v in value if isinstance(v, str))
        if isinstance(value, list)
        else frozenset()
    )


def _provider_error(event: str, **detail: Any) -> OidcError:
    log.warning(event, **detail)
    return OidcError(OidcErrorCode.OIDC_PROVIDER_ERROR, "The sign-in provider could not be used.")


def _token_invalid(reason: str, **detail: Any) -> OidcError:
    log.warning("oidc.id_token_rejected", reason=reason, **detail)
    return OidcError(OidcErrorCode.OIDC_TOKEN_INVALID, "The sign-in could not be verified.")


class OidcClient:
    """One configured provider. Discovery and keys are fetched on first use and cached; the
    per-login secrets (state, nonce, PKCE verifier) are the caller's to keep until `finish`.

    `http` serves discovery and JWKS; the code exchange goes through Authlib's own client
    (an httpx client too), made with the same timeout. `clock` (monotonic seconds) exists so
    tests can step past the JWKS refetch limit."""

    def __init__(
        self,
        config: OidcConfig,
        http: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._http = http
        self._owns_http = http is None
        self._clock = clock
        self._provider: _Provider | None = None
        self._oauth: Any = None  # AsyncOAuth2Client, made once discovery says how to auth
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0
        self._discovery_lock = asyncio.Lock()
        self._jwks_lock = asyncio.Lock()

    async def start(self) -> OidcStart:
        provider = await self._discover()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 unreserved characters, as RFC 7636 allows
        url, _ = self._oauth.create_authorization_url(
            provider.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
        )
        return OidcStart(url, state, nonce, verifier)

    async def finish(self, code: str, *, nonce: str, code_verifier: str) -> OidcIdentity:
        provider = await self._discover()
        id_token = await self._exchange(provider, code, code_verifier)
        claims = await self._verify(provider, id_token, nonce)
        email, name = claims.get("email"), claims.get("name")
        return OidcIdentity(
            issuer=claims["iss"],
            subject=claims["sub"],
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,  # not "true", not 1
            name=name if isinstance(name, str) else None,
        )

    async def aclose(self) -> None:
        if self._oauth is not None:
            await self._oauth.aclose()
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    # -- provider metadata and keys ------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._config.timeout_seconds)
        return self._http

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._client().get(url, timeout=self._config.timeout_seconds)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _provider_error(f"oidc.{what}_failed", url=url, error=repr(exc)) from exc
        if not isinstance(body, dict):
            raise _provider_error(f"oidc.{what}_failed", url=url, error="not a JSON object")
        return body

    async def _discover(self) -> _Provider:
        async with self._discovery_lock:
            if self._provider is None:
                self._provider = await self._fetch_discovery()
                self._oauth = self._make_oauth(self._provider)
            return self._provider

    async def _fetch_discovery(self) -> _Provider:
        issuer = self._config.issuer
        doc = await self._get_json(
            f"{issuer.rstrip('/')}/.well-known/openid-configuration", "discovery"
        )
        # OIDC Discovery 4.3: the issuer must be exactly the one we asked, or a document
        # served elsewhere could make us trust another issuer's tokens.
        if doc.get("issuer") != issuer:
            raise _provider_error(
                "oidc.discovery_issuer_mismatch", expected=issuer, got=doc.get("issuer")
            )
        authorize, token, jwks = (
            doc.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        )
        if not (isinstance(authorize, str) and isinstance(token, str) and isinstance(jwks, str)):
            raise _provider_error("oidc.discovery_incomplete", issuer=issuer)
        algs = doc.get("id_token_signing_alg_values_supported")
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return _Provider(
            authorization_endpoint=authorize,
            token_endpoint=token,
            jwks_uri=jwks,
            signing_algs=_strings(algs),
            auth_methods=_strings(methods),
        )

    def _make_oauth(self, provider: _Provider) -> Any:
        cfg = self._config
        # Authlib's client_secret_basic does not form-encode the id and secret as RFC 6749
        # 2.3.1 asks, so it is only used when that encoding would change nothing.
        plain = set(cfg.client_id + cfg.client_secret) <= _UNRESERVED
        basic_ok = "client_secret_basic" in provider.auth_methods
        use_post = "client_secret_post" in provider.auth_methods and not (basic_ok and plain)
        return AsyncOAuth2Client(
            client_id=cfg.client_id,
            client_secret=cfg.client_secret,
            token_endpoint_auth_method="client_secret_post" if use_post else "client_secret_basic",
            scope=" ".join(cfg.scopes),
            redirect_uri=cfg.redirect_uri,
            code_challenge_method="S256",
            timeout=cfg.timeout_seconds,
        )

    async def _keys(self, provider: _Provider) -> KeySet:
        """The cached key set, fetched when missing or older than JWKS_MAX_AGE_SECONDS."""
        async with self._jwks_lock:
            if self._jwks is None or self._clock() - self._jwks_at >= JWKS_MAX_AGE_SECONDS:
                return await self._fetch_keys(provider)
            return self._jwks

    async def _newer_keys(self, provider: _Provider, stale: KeySet) -> KeySet | None:
        """A set newer than `stale` (which lacked a token's kid): one another login fetched
        meanwhile, or a fresh fetch; None when the last fetch is too recent to repeat."""
        async with self._jwks_lock:
            if self._jwks is not stale:
                return self._jwks
            if self._clock() - self._jwks_at < JWKS_MIN_REFETCH_SECONDS:
                return None
            return await self._fetch_keys(provider)

    async def _fetch_keys(self, provider: _Provider) -> KeySet:
        doc = await self._get_json(provider.jwks_uri, "jwks")
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]  # checked just below
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise _provider_error(
                "oidc.jwks_failed", url=provider.jwks_uri, error=repr(exc)
            ) from exc
        self._jwks, self._jwks_at = keys, self._clock()
        return keys

    # -- the code exchange and the ID token ----------------------------------------------

    async def _exchange(self, provider: _Provider, code: str, code_verifier: str) -> str:
        try:
            token = await self._oauth.fetch_token(
                provider.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
            )
        except AuthlibBaseError as exc:  # an OAuth error answer, e.g. invalid_grant
            raise _provider_error("oidc.code_refused", error=exc.error) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise _provider_error("oidc.token_endpoint_failed", error=repr(exc)) from exc
        finally:
            self._oauth.token = None  # the client is shared: keep no user's tokens on it
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise _token_invalid("no id_token in the token response")
        return id_token

    async def _verify(self, provider: _Provider, id_token: str, nonce: str) -> dict[str, Any]:
        algs = provider.signing_algs & ASYMMETRIC_ALGS
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (JoseError, ValueError, TypeError) as exc:
            raise _token_invalid("malformed", error=type(exc).__name__) from exc
        if header.get("alg") not in algs:
            raise _token_invalid("algorithm not allowed", alg=str(header.get("alg")))
        keys = await self._keys(provider)
        decoded = self._decode(id_token, keys, algs)
        if decoded is None:  # unknown kid: maybe the provider rotated its keys
            newer = await self._newer_keys(provider, keys)
            decoded = self._decode(id_token, newer, algs) if newer is not None else None
            if decoded is None:
                raise _token_invalid("unknown kid", kid=str(header.get("kid")))
        claims = decoded.claims
        self._check_claims(claims, nonce)
        return claims

    @staticmethod
    def _decode(id_token: str, keys: KeySet, algs: frozenset[str]) -> jwt.Token | None:
        """The verified token; None when no key has its kid."""
        try:
            # An explicit, non-empty list: with none joserfc would fall back to its own
            # "recommended" algorithms, HS256 among them.
            return jwt.decode(id_token, keys, algorithms=sorted(algs))
        except InvalidKeyIdError:
            return None
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise _token_invalid("signature", error=type(exc).__name__) from exc

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        client_id = self._config.client_id
        registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_SKEW_SECONDS,
            iss={"essential": True, "value": self._config.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": client_id},  # a list must contain it
            exp={"essential": True},
            iat={"essential": True},  # not after now + leeway
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            claim = getattr(exc, "claim", None)  # the claim's name, never its value
            raise _token_invalid("claims", error=type(exc).__name__, claim=claim) from exc
        # OIDC Core 3.1.3.7: with several audiences the authorized party must be us, and an
        # azp that is present must be us in any case.
        aud, azp = claims["aud"], claims.get("azp")
        several = isinstance(aud, list) and len(aud) > 1
        if (several or azp is not None) and azp != client_id:
            raise _token_invalid("azp")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise _token_invalid("nonce")
