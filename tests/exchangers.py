"""Exchanger cores for the tests of the exchange room (no grpc), and a count of their exchanges.

`on_behalf_of(client, ...)` / `client_credentials(client, ...)` build the core that `OnBehalfOf`
and `AppOnly` hold. `Counted` counts exchanges (acquisitions whose token came from the
authority) through the observer hooks telemetry gets: no runtime class keeps a counter for tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from grpc_obo import ConfidentialClient, Telemetry
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._exchange._grants import CLIENT_CREDENTIALS, ON_BEHALF_OF
from grpc_obo._exchange._observe import AcquisitionNote, ExchangeObserver


def on_behalf_of(client: ConfidentialClient, **options: Any) -> Exchanger:
    return Exchanger(client, ON_BEHALF_OF, **options)


def client_credentials(client: ConfidentialClient, **options: Any) -> Exchanger:
    options.setdefault("max_workers", 4)
    return Exchanger(client, CLIENT_CREDENTIALS, **options)


class Counted(ExchangeObserver):
    """An observer counting the exchanges its exchanger started (`note.source == "authority"`:
    this caller's fetch ran; joining another's, or a cache hit, is not one)."""

    def __init__(self) -> None:
        self.exchanges = 0

    @contextlib.contextmanager
    def acquisition(self, grant: str, scopes: Iterable[str]) -> Iterator[AcquisitionNote]:
        with super().acquisition(grant, scopes) as note:
            try:
                yield note
            finally:
                if note.source == "authority":
                    self.exchanges += 1


class Metered:
    """Exchanges counted from what grpc_obo's telemetry exports (the `grpc_obo.obo.duration`
    histogram's points with `grpc_obo.token.source=authority`), for the public classes in any
    process: give `telemetry()` to `OnBehalfOf`/`AppOnly`, read `exchanges`."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        self._reader = InMemoryMetricReader()
        self._provider = MeterProvider(metric_readers=[self._reader])

    def telemetry(self) -> Telemetry:
        return Telemetry(meter_provider=self._provider)

    @property
    def exchanges(self) -> int:
        data = self._reader.get_metrics_data()
        return sum(
            point.count
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "grpc_obo.obo.duration"
            for point in metric.data.data_points
            if (point.attributes or {}).get("grpc_obo.token.source") == "authority"
        )
