"""Hooks through which the client part observes token acquisitions (telemetry plugs in here).

The exchange part never imports OpenTelemetry: telemetry's private recorder implements these
methods, and `OnBehalfOf`/`AppOnly` hand it to the exchanger. The default observer does nothing.
Observers receive exceptions and fixed strings, never a token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["AcquisitionNote", "ExchangeObserver", "NoteLike", "Observer"]


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
