"""Hooks through which the client part observes token acquisitions (telemetry plugs in here).

The exchange part never imports OpenTelemetry: telemetry's private recorder implements these
methods, and `OnBehalfOf`/`AppOnly` hand it to the exchanger. The default observer does nothing.
Observers receive exceptions and fixed strings, never a token.

`StoreObserver` is what the Redis store tells about its misses (one fixed word per outcome,
see `STORE_OUTCOMES`), to whoever counts them (`RedisTokenStore(observer=...)`; tests do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = [
    "STORE_OUTCOMES",
    "AcquisitionNote",
    "ExchangeObserver",
    "NoteLike",
    "Observer",
    "StoreObserver",
    "quiet_store",
]

STORE_OUTCOMES = frozenset({"from_redis", "leased", "waited", "impatient", "unavailable", "stale"})
"""What the Redis store did, one word each time: a token found in Redis (stored by any replica);
an exchange run here under the key's lease; a wait for another replica's exchange; an
exchange here without the lease because the callers' patience (or 2 x lease_ttl) ran out; a
miss handled without Redis because it did not answer; an in-process entry served past its
recheck time because Redis did not answer."""


class NoteLike(Protocol):
    """What an observer is told about one step while it runs."""

    def fail(self, error: BaseException | str, *, retry: bool = False) -> None: ...


class AcquisitionNote(NoteLike, Protocol):
    source: str
    """"cache", "authority" or "single_flight" (joined another caller's exchange)."""


class Observer(Protocol):
    def hit(self, grant: str, scopes: Iterable[str]) -> None:
        """A token served from the cache with no work at all (the hot path: keep it cheap)."""

    def acquisition(
        self, grant: str, scopes: Iterable[str]
    ) -> AbstractContextManager[AcquisitionNote]: ...

    def authority_request(
        self, attempt: int, step: str = "token"
    ) -> AbstractContextManager[NoteLike]: ...


class _Note:
    __slots__ = ("source",)

    def __init__(self) -> None:
        self.source = "cache"

    def fail(self, error: BaseException | str, *, retry: bool = False) -> None:
        return None


class ExchangeObserver:
    """The observer that observes nothing (no telemetry configured)."""

    def hit(self, grant: str, scopes: Iterable[str]) -> None:
        return None

    @contextlib.contextmanager
    def acquisition(self, grant: str, scopes: Iterable[str]) -> Iterator[AcquisitionNote]:
        yield _Note()

    @contextlib.contextmanager
    def authority_request(self, attempt: int, step: str = "token") -> Iterator[NoteLike]:
        yield _Note()


class StoreObserver(Protocol):
    def store_outcome(self, outcome: str) -> None:
        """The shared store did `outcome` (one of `STORE_OUTCOMES`; never a key or a token)."""


class _QuietStore:
    def store_outcome(self, outcome: str) -> None:
        return None


quiet_store: StoreObserver = _QuietStore()
"""The store observer that observes nothing (the default)."""
