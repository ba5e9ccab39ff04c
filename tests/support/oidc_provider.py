"""A small, real OIDC provider on loopback for tests: discovery, JWKS, authorize and token.

`/authorize` signs in `provider.user` at once (no login page) and redirects back with a code;
`/token` checks client authentication, the code, the redirect URI and PKCE, and returns an ID
token signed RS256. Attributes on the provider are knobs a test sets before a login: the user,
switches that tamper with the next ID token, and faults of the provider itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

REDIRECT_URI = "http://127.0.0.1:8000/auth/oidc/callback"
DELETE = object()  # a value in `claim_overrides` that removes the claim
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass
class TestUser:
    __test__ = False  # not a pytest test class

    sub: str = "user-1"
    email: str | None = "ada@example.com"
    email_verified: bool = True
    name: str | None = "Ada Lovelace"


@dataclass
class _Grant:
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: TestUser
    expires_at: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_key() -> RSAKey:
    kid = secrets.token_hex(8)
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _unsafe_token(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A JWS joserfc refuses to make: unsigned (alg none), or HS256 keyed with a public key."""
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = b"" if hmac_key is None else hmac.digest(hmac_key, signing_input.encode(), "sha256")
    return f"{signing_input}.{_b64url(signature)}"


@dataclass
class OidcProvider:
    issuer: str
    client_id: str = "gpucloud-test"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redirect_uri: str = REDIRECT_URI
    user: TestUser = field(default_factory=TestUser)
    # Tamper switches, read when /token signs the next ID token.
    sign_with_other_key: bool = False  # same kid, different key: the signature fails
    wrong_issuer: bool = False
    wrong_audience: bool = False
    expired: bool = False
    override_nonce: str | None = None
    alg_none: bool = False
    hs256_with_public_key: bool = False  # the classic RS256 -> HS256 key-confusion forgery
    claim_overrides: dict[str, Any] = field(default_factory=dict)  # DELETE removes a claim
    # Faults of the provider itself.
    discovery_issuer: str | None = None  # publish another issuer in discovery
    signing_algs: list[str] = field(default_factory=lambda: ["RS256"])
    token_delay_seconds: float = 0.0
    # What was asked of it: endpoint names, and the client authentication methods used.
    requests: Counter[str] = field(default_factory=Counter)
    _keys: list[RSAKey] = field(default_factory=lambda: [_new_key()], init=False, repr=False)
    _grants: dict[str, _Grant] = field(default_factory=dict, init=False, repr=False)

    def rotate_key(self) -> None:
        """Sign with a new key under a new kid; the previous key stays published a while."""
        self._keys = [_new_key(), self._keys[0]]

    @property
    def kid(self) -> str:
        return str(self._keys[0].kid)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        self.requests["discovery"] += 1
        return JSONResponse(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": self.signing_algs,
                "token_endpoint_auth_methods_supported": AUTH_METHODS,
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.requests["jwks"] += 1
        return JSONResponse(KeySet(list(self._keys)).as_dict(private=False))

    async def _authorize(self, request: Request) -> Response:
        self.requests["authorize"] += 1
        q = request.query_params
        problems = [
            q.get("response_type") != "code" and "response_type",
            q.get("client_id") != self.client_id and "client_id",
            q.get("redirect_uri") != self.redirect_uri and "redirect_uri",
            "openid" not in q.get("scope", "").split() and "scope",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            not q.get("code_challenge") and "code_challenge",
        ]
        if any(problems):
            return PlainTextResponse(f"bad request: {[p for p in problems if p]}", 400)
        code = secrets.token_urlsafe(32)
        self._grants[code] = _Grant(
            redirect_uri=self.redirect_uri,
            challenge=q["code_challenge"],
            nonce=q.get("nonce"),
            user=replace(self.user),  # the user signed in now, not at /token
            expires_at=time.time() + 60,
        )
        query = urlencode({"code": code, **({"state": q["state"]} if "state" in q else {})})
        return RedirectResponse(f"{self.redirect_uri}?{query}", status_code=302)

    async def _token(self, request: Request) -> Response:
        self.requests["token"] += 1
        if self.token_delay_seconds:
            await asyncio.sleep(self.token_delay_seconds)
        # Parsed by hand: Starlette's request.form() needs python-multipart, not installed.
        form = dict(parse_qsl((await request.body()).decode()))
        if not self._client_authenticated(request, form):
            return _oauth_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type")
        grant = self._grants.pop(form.get("code", ""), None)  # a code works once
        verifier = form.get("code_verifier", "")
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        if (
            grant is None
            or grant.expires_at < time.time()
            or form.get("redirect_uri") != grant.redirect_uri
            or not hmac.compare_digest(challenge, grant.challenge)
        ):
            return _oauth_error("invalid_grant")
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": self._id_token(grant),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _client_authenticated(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):  # RFC 6749 2.3.1: form-encoded, then base64
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return False
            client_id, _, secret = (unquote_plus(p) for p in decoded.partition(":"))
            self.requests["client_secret_basic"] += 1
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            self.requests["client_secret_post"] += 1
        return client_id == self.client_id and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        user = grant.user
        claims: dict[str, Any] = {
            "iss": "http://127.0.0.1:1/someone-else" if self.wrong_issuer else self.issuer,
            "sub": user.sub,
            "aud": "another-client" if self.wrong_audience else self.client_id,
            "iat": now - 7200 if self.expired else now,
            "exp": now - 3600 if self.expired else now + 300,
            "email_verified": user.email_verified,
        }
        for name, value in [("nonce", grant.nonce), ("email", user.email), ("name", user.name)]:
            if value is not None:
                claims[name] = value
        if self.override_nonce is not None:
            claims["nonce"] = self.override_nonce
        for name, value in self.claim_overrides.items():
            if value is DELETE:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self._keys[0]
        if self.alg_none:
            return _unsafe_token({"alg": "none", "typ": "JWT"}, claims, None)
        if self.hs256_with_public_key:
            header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
            return _unsafe_token(header, claims, key.as_pem(private=False))
        if self.sign_with_other_key:
            key = RSAKey.generate_key(2048, parameters={"kid": self.kid})
        return jwt.encode({"alg": "RS256", "kid": self.kid}, claims, key, algorithms=["RS256"])


def _oauth_error(error: str, status: int = 400) -> Response:
    return JSONResponse({"error": error}, status, headers={"Cache-Control": "no-store"})


@contextmanager
def running_provider() -> Iterator[OidcProvider]:
    """Serve a provider on 127.0.0.1 in a background thread until the block ends."""
    # Bind here and hand uvicorn the socket: the port is ours before the issuer is named.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    provider = OidcProvider(issuer=f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = uvicorn.Config(
        provider.app(), lifespan="off", log_config=None, access_log=False,
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "provider did not start"
            time.sleep(0.01)
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
