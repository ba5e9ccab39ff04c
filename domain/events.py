"""Domain events: facts recorded by use cases and written to the outbox in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """A fact worth telling others about.

    `topic` is the fan-out channel subscribers listen on (e.g. ``catalog``); `name` says what
    happened; `payload` is JSON-serialisable and carries ids, not whole objects, so a subscriber
    always reads the current state.
    """

    topic: str
    name: str
    payload: dict[str, Any]
