"""The principal cache keeps nothing it cannot keep honestly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.identity.principal import Principal
from domain.identity.scopes import Role
from gpucloud.principal_cache import PrincipalCache


def principal(valid_for: timedelta = timedelta(hours=1)) -> Principal:
    return Principal.for_session(1, Role.USER, 1, datetime.now(UTC) + valid_for)


def live_cache(ttl: float = 60.0) -> PrincipalCache:
    cache = PrincipalCache(ttl=ttl)
    cache.live_epoch = lambda: 1
    return cache


def test_hit_after_put() -> None:
    cache = live_cache()
    cache.put(b"k", principal(), cache.generation)
    found = cache.get(b"k")
    assert found is not None and found.user_id == 1
    assert cache.stats == {"hit": 1, "miss": 0}


def test_nothing_is_cached_while_the_event_stream_is_down() -> None:
    cache = PrincipalCache(ttl=60.0)
    cache.live_epoch = lambda: None
    cache.put(b"k", principal(), cache.generation)
    assert cache.get(b"k") is None


def test_a_change_seen_during_the_lookup_prevents_storing() -> None:
    cache = live_cache()
    generation = cache.generation
    cache.invalidate()  # e.g. a logout committed while we were reading the session
    cache.put(b"k", principal(), generation)
    assert cache.get(b"k") is None


def test_invalidation_and_reconnects_drop_entries() -> None:
    cache = live_cache()
    cache.put(b"k", principal(), cache.generation)
    cache.invalidate()
    assert cache.get(b"k") is None
    cache.put(b"k", principal(), cache.generation)
    cache.live_epoch = lambda: 2  # the stream reconnected: events may have been missed
    assert cache.get(b"k") is None


def test_an_entry_never_outlives_its_credential() -> None:
    cache = live_cache(ttl=60.0)
    cache.put(b"k", principal(valid_for=timedelta(seconds=-1)), cache.generation)
    assert cache.get(b"k") is None


def test_zero_ttl_disables_the_cache() -> None:
    cache = live_cache(ttl=0)
    cache.put(b"k", principal(), cache.generation)
    assert cache.get(b"k") is None
