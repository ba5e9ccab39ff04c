"""Keyset pagination: a page is the rows after an opaque cursor, never an OFFSET."""

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


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    key = parse_key(raw[len(_CURSOR_PREFIX) :]) if raw.startswith(_CURSOR_PREFIX) else None
    if key is None:
        raise InvalidInput(
            Problem("INVALID_CURSOR", "The cursor is not one this API issued.", "after")
        )
    return key


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Validated paging arguments: `first` rows after the row whose key is `after_key`."""

    first: int
    after_key: int | None

    @classmethod
    def parse(cls, first: int | None, after: str | None) -> PageRequest:
        size = DEFAULT_PAGE_SIZE if first is None else first
        if size < 0 or size > MAX_PAGE_SIZE:
            raise InvalidInput(
                Problem(
                    "INVALID_PAGE_SIZE", f"first must be between 0 and {MAX_PAGE_SIZE}.", "first"
                )
            )
        return cls(first=size, after_key=None if after is None else decode_cursor(after))


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page, each with its keyset key, and whether more rows follow."""

    items: list[tuple[int, T]]
    has_next_page: bool
    has_previous_page: bool
