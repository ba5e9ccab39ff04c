"""Error messages quote the ID the client sent, not our database key.

The domain knows objects by database id and says so in its messages ("No SKU with id 99."),
which is right for the CLI and the logs. A GraphQL client sent a global ID (`U0tVOjk5`), and
a message should quote that: the edge, which decoded it, puts it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from domain.errors import DomainError


def requote(exc: DomainError, field: str, key: int, sent: str) -> None:
    """In every problem of `exc` on `field`, the first mention of `key` becomes `sent`."""
    mention = re.compile(rf"(?<![\w.]){key}(?!\w|\.\d)")  # a whole number, not part of one
    exc.problems[:] = [
        replace(p, message=mention.sub(lambda _: sent, p.message, count=1))
        if p.field == field
        else p
        for p in exc.problems
    ]


@contextmanager
def quoting(sent: str, key: int, field: str = "id") -> Iterator[None]:
    """Around a domain call made with the key the client's `sent` ID named in `field`."""
    try:
        yield
    except DomainError as exc:
        requote(exc, field, key, sent)
        raise
