"""Run localstripe on 127.0.0.1 only, with nothing written to disk.

`python -m tests.support.localstripe_server --port N`. localstripe's own `start()` binds `::`
(every interface) and pickles its store to /tmp/localstripe.pickle after each write, which
runs on the same machine would share; both are avoided here.
"""

from __future__ import annotations

import argparse

import localstripe.resources
import localstripe.server
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Replaced on the class: the store instance and the server's middleware both call it.
    localstripe.resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    web.run_app(localstripe.server.app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
