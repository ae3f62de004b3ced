"""Fixtures for the telemetry tests: a real Jaeger 2 on free loopback ports, one per session.

The binary comes from `scripts/jaeger.sh` (built once with Go; `make jaeger`). A machine without
Go fails these tests, loudly, unless GRPC_OBO_SKIP_JAEGER=1 asks for an explicit skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.jaeger import Jaeger, JaegerError, JaegerUnavailable, jaeger_binary, jaeger_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "jaeger: needs a real Jaeger 2 (built once from source with Go by scripts/jaeger.sh; "
        "GRPC_OBO_SKIP_JAEGER=1 skips when Go is missing)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the `jaeger` fixture, so `-m "not jaeger"` leaves them out."""
    for item in items:
        if "jaeger" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.jaeger)


@pytest.fixture(scope="session")
def jaeger() -> Iterator[Jaeger]:
    """A running Jaeger 2 (memory storage) shared by the session; see tests/jaeger.py."""
    try:
        binary = jaeger_binary()
    except JaegerUnavailable as exc:
        if os.environ.get("GRPC_OBO_SKIP_JAEGER") == "1":
            pytest.skip(f"NO JAEGER, SKIPPED ON REQUEST (GRPC_OBO_SKIP_JAEGER=1): {exc}")
        pytest.fail(f"no Jaeger binary: {exc}", pytrace=False)
    except JaegerError as exc:  # Go missing without the skip, or a failed build: loud
        pytest.fail(str(exc), pytrace=False)
    with jaeger_server(binary) as server:
        yield server
