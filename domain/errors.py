"""Typed domain errors: every failure a client can act on carries a code, a message and a field."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: a machine-readable code, a human message, the field."""

    code: str
    message: str
    field: str | None = None


class DomainError(Exception):
    """Base for errors the edge turns into typed GraphQL errors or CLI messages."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems: list[Problem] = problems if isinstance(problems, list) else [problems]
        super().__init__("; ".join(p.message for p in self.problems))


class InvalidInput(DomainError):
    """The request was understood but its values break a rule; nothing was written."""


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate name, a retired object)."""


@dataclass
class ProblemCollector:
    """Gathers every problem of an input so the client can fix them all in one round trip."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, code: str, message: str, field_name: str | None = None) -> None:
        self.problems.append(Problem(code, message, field_name))

    def raise_if_any(self) -> None:
        if self.problems:
            raise InvalidInput(list(self.problems))


class SubscriberLagged(DomainError):
    """A live stream fell too far behind; it ends so the client reconnects instead of silently
    missing events."""

    def __init__(self) -> None:
        super().__init__(Problem("SUBSCRIBER_LAGGED", "Too many events were waiting; reconnect."))


class ServiceUnavailable(DomainError):
    """A backing service (database, Redis) cannot be reached; the request may be retried."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            Problem("SERVICE_UNAVAILABLE", f"The {service} is unavailable; try again shortly.")
        )


class Contention(Exception):
    """The database gave up on a transaction because of a concurrent one (deadlock or
    serialization failure). Nothing was committed; the whole transaction may be run again."""
