"""The GraphiQL page at GET /graphql and its assets under /graphiql/, all served by the app.

Every asset is a file in the package (see gpucloud.graphiql_assets), read once, and addressed by
a digest of its bytes (`/graphiql/<digest>/<name>`), so it can be cached for a year and a new
release can never be mixed with an old page. The page names each with its sha384 `integrity`,
and its Content-Security-Policy allows scripts from this origin only: no inline script, no CDN.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from gpucloud.graphiql_assets import OWN_SCRIPT, OWN_STYLE, SCRIPTS, STATIC_DIR, STYLES

PREFIX = "/graphiql"
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_IMMUTABLE = "public, max-age=31536000, immutable"
# 'unsafe-inline' for styles only: GraphiQL's editor and Emotion set styles at run time. Fonts
# are data: URLs inside graphiql.min.css. 'self' in connect-src covers ws(s):// to this host.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


def _accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (`gzip;q=0` refuses it)."""
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            weight = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(weight) > 0
            except ValueError:
                return False
    return False


@dataclass
class Asset:
    name: str
    body: bytes
    media_type: str
    digest: str = field(init=False)  # names this content in the URL
    integrity: str = field(init=False)  # the page's Subresource Integrity value
    _gzipped: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.body).hexdigest()[:16]
        sha384 = base64.b64encode(hashlib.sha384(self.body).digest()).decode()
        self.integrity = f"sha384-{sha384}"

    @property
    def url(self) -> str:
        return f"{PREFIX}/{self.digest}/{self.name}"

    async def gzipped(self) -> bytes:
        # Compressed on first use, not at start (graphiql.min.js: 3.5 MB, 0.7 MB gzipped), and
        # off the event loop: that one takes a third of a second. Two first requests at once
        # may both compress; the bytes are the same.
        if self._gzipped is None:
            self._gzipped = await asyncio.to_thread(gzip.compress, self.body, 9, mtime=0)
        return self._gzipped


class GraphiQLPage:
    """The page (rendered once, for this app's cookie names) and the assets it references."""

    def __init__(self, csrf_cookie: str, csrf_header: str, directory: Path = STATIC_DIR) -> None:
        def load(name: str) -> Asset:
            return Asset(name, (directory / name).read_bytes(), _MEDIA_TYPES[Path(name).suffix])

        self.styles = [load(item.name) for item in STYLES] + [load(OWN_STYLE)]
        self.scripts = [load(item.name) for item in SCRIPTS]
        self.bootstrap = load(OWN_SCRIPT)
        self.assets = {a.name: a for a in (*self.styles, *self.scripts, self.bootstrap)}
        self.html = self._render(csrf_cookie, csrf_header)

    def _render(self, csrf_cookie: str, csrf_header: str) -> str:
        links = "".join(
            f'    <link rel="stylesheet" href="{a.url}" integrity="{a.integrity}">\n'
            for a in self.styles
        )
        scripts = "".join(
            f'    <script src="{a.url}" integrity="{a.integrity}"></script>\n' for a in self.scripts
        )
        boot = self.bootstrap
        return (
            "<!doctype html>\n"
            '<html lang="en">\n'
            "  <head>\n"
            '    <meta charset="utf-8">\n'
            "    <title>gpucloud GraphiQL</title>\n"
            '    <link rel="icon" href="data:,">\n'  # no /favicon.ico request (a 404)
            f"{links}"
            "  </head>\n"
            "  <body>\n"
            '    <div id="graphiql">Loading GraphiQL...</div>\n'
            f"{scripts}"
            f'    <script src="{boot.url}" integrity="{boot.integrity}"'
            f' data-csrf-cookie="{escape(csrf_cookie)}"'
            f' data-csrf-header="{escape(csrf_header)}"></script>\n'
            "  </body>\n"
            "</html>\n"
        )

    def page(self) -> Response:
        return HTMLResponse(
            self.html,
            headers={
                "content-security-policy": CSP,
                "cache-control": "no-cache",  # revalidated: it names the assets' digests
                "x-content-type-options": "nosniff",
                "x-frame-options": "DENY",
                "referrer-policy": "no-referrer",
            },
        )

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None or found.digest != request.path_params["digest"]:
            # An old page's digest gets no new bytes under its URL (which is cached for a year).
            return PlainTextResponse("Not Found", status_code=404)
        headers = {
            "cache-control": _IMMUTABLE,
            "x-content-type-options": "nosniff",
            "vary": "accept-encoding",
            "etag": f'"{found.digest}"',
        }
        if request.headers.get("if-none-match") == f'"{found.digest}"':
            return Response(status_code=304, headers=headers)
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            headers["content-encoding"] = "gzip"
            return Response(await found.gzipped(), media_type=found.media_type, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    def route(self) -> Route:
        return Route(PREFIX + "/{digest}/{name}", self.asset, methods=["GET", "HEAD"])
