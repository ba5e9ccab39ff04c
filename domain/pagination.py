"""Keyset pagination: a page is the rows after (or before) an opaque cursor, never an OFFSET.

Relay's four arguments: `first` rows after `after`, or the `last` rows before `before`; a cursor
of the other side narrows the range further (the connection spec's ApplyCursorsToEdges).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from domain.errors import InvalidInput, Problem

T = TypeVar("T")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
_CURSOR_PREFIX = "k1:"
# Keys are PostgreSQL BIGINTs: ASCII digits only (str.isdigit accepts '²'), at most 19 of them.
_KEY = re.compile(r"^[0-9]{1,19}$")
MAX_KEY = 2**63 - 1


def parse_key(text: str) -> int | None:
    """A keyset/ID key, or None when the text is not a BIGINT we could have issued."""
    if not _KEY.match(text):
        return None
    key = int(text)
    return key if key <= MAX_KEY else None


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "after") -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    key = parse_key(raw[len(_CURSOR_PREFIX) :]) if raw.startswith(_CURSOR_PREFIX) else None
    if key is None:
        raise InvalidInput(
            Problem("INVALID_CURSOR", "The cursor is not one this API issued.", field)
        )
    return key


def _size(value: int, name: str) -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidInput(
            Problem("INVALID_PAGE_SIZE", f"{name} must be between 0 and {MAX_PAGE_SIZE}.", name)
        )
    return value


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Validated paging arguments: `first` rows after the row whose key is `after_key` (and
    before `before_key`, when given). With `backward` (Relay's `last`), `first` counts the rows
    nearest the end of that range instead: the last `first` of them, still in list order."""

    first: int
    after_key: int | None
    before_key: int | None = None
    backward: bool = False

    @classmethod
    def parse(
        cls,
        first: int | None,
        after: str | None,
        last: int | None = None,
        before: str | None = None,
    ) -> PageRequest:
        if first is not None and last is not None:
            raise InvalidInput(
                Problem("INVALID_PAGINATION", "Give first or last, not both.", "last")
            )
        backward = last is not None
        size = (
            _size(last, "last")
            if last is not None
            else _size(DEFAULT_PAGE_SIZE if first is None else first, "first")
        )
        return cls(
            first=size,
            after_key=None if after is None else decode_cursor(after, "after"),
            before_key=None if before is None else decode_cursor(before, "before"),
            backward=backward,
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page, each with its keyset key, and whether more rows follow."""

    items: list[tuple[int, T]]
    has_next_page: bool
    has_previous_page: bool

    @classmethod
    def empty(cls, request: PageRequest) -> Page[T]:
        """No rows in range; whether any lie beyond the cursors, as a fetched page says it."""
        return cls(
            [],
            has_next_page=request.backward and request.before_key is not None,
            has_previous_page=not request.backward and request.after_key is not None,
        )
