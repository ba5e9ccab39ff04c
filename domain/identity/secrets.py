"""Bearer secrets: random, recognisable by prefix, stored only as a hash.

The secrets carry 256 bits of randomness, so a single SHA-256 is enough to store them: a slow
password hash protects guessable secrets, and these cannot be guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "gpc_"  # API tokens: secret scanners can match this prefix
SESSION_PREFIX = "gps_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def csrf_token_for(session_secret: str) -> str:
    """The CSRF token is bound to the session: a cookie planted by a sibling site cannot match."""
    return hashlib.sha256(b"csrf\x00" + session_secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
