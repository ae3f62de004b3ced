"""grpc_obo's metrics, read from the SDK's in-memory reader after real calls through the chain.

Durations only for work done (a verified-token cache hit records nothing), the token source that
gives the exchange cache's hit ratio, key fetches by result, exchanges in flight back to zero, and
only bounded attributes: no identity, no free text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.telemetry.otel import (  # noqa: F401 - the *_fixture names are pytest fixtures
    WAIT_TIMEOUT,
    ChainFactory,
    Recorder,
    chains_fixture,
    recorder_fixture,
    run_every_outcome,
)

VALIDATION = "grpc_obo.validation.duration"
EXCHANGE = "grpc_obo.obo.duration"
KEYS = "grpc_obo.keys.fetch.duration"
ACTIVE = "grpc_obo.obo.active"
REFUSALS = "grpc_obo.server.refusals"

# Which attributes each metric may carry (bounded vocabularies, never identities).
ALLOWED_KEYS = {
    VALIDATION: {"grpc_obo.result", "error.type"},
    EXCHANGE: {"grpc_obo.token.source", "grpc_obo.grant", "error.type"},
    KEYS: {"grpc_obo.result", "error.type"},
    ACTIVE: set(),
    REFUSALS: {"error.type"},
}
ALLOWED_VALUES = {
    "grpc_obo.result": {"accepted", "refused", "ok", "failed"},
    "grpc_obo.token.source": {"cache", "authority", "single_flight"},
    "grpc_obo.grant": {"on_behalf_of", "client_credentials"},
}


def counts(recorder: Recorder, name: str) -> dict[frozenset[tuple[str, Any]], int]:
    """Histogram `name`: {attribute set: number of recordings}."""
    return {
        frozenset(dict(point.attributes or {}).items()): point.count
        for point in recorder.metric_points(name)
    }


def totals(recorder: Recorder, name: str) -> dict[frozenset[tuple[str, Any]], int]:
    """Counter `name`: {attribute set: total}."""
    return {
        frozenset(dict(point.attributes or {}).items()): point.value
        for point in recorder.metric_points(name)
    }


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset((k.replace("__", "."), v) for k, v in attributes.items())


async def test_validation_duration_counts_only_work_by_result_and_error_type(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    token = chain.token("alice")

    await chain.call(token)  # two validations that did work (one per hop)
    await chain.call(token)  # two verified-token cache hits: nothing recorded
    with pytest.raises(grpc.aio.AioRpcError, match="UNAUTHENTICATED"):
        await chain.call(None)
    await recorder.settle()

    # The missing token was refused without validation work: counted, not timed.
    assert counts(recorder, VALIDATION) == {key(grpc_obo__result="accepted"): 2}
    assert totals(recorder, REFUSALS) == {key(error__type="MissingTokenError"): 1}
    for point in recorder.metric_points(VALIDATION):
        assert point.sum >= 0 and point.max < 10


async def test_exchange_duration_by_token_source_gives_the_cache_hit_ratio(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    alice, bob = chain.token("alice"), chain.token("bob")

    for _ in range(3):
        await chain.call(alice)
    await chain.call(bob)
    await recorder.settle()

    by_source = counts(recorder, EXCHANGE)
    assert by_source == {
        key(grpc_obo__token__source="authority", grpc_obo__grant="on_behalf_of"): 2,
        key(grpc_obo__token__source="cache", grpc_obo__grant="on_behalf_of"): 2,
    }
    hits = by_source[key(grpc_obo__token__source="cache", grpc_obo__grant="on_behalf_of")]
    assert hits / sum(by_source.values()) == 0.5  # the hit ratio an operator would chart
    assert chain.authority.requests.count(grant="obo") == 2


async def test_a_failed_exchange_is_recorded_with_its_error_type(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    chain.authority.faults.fail(503, user="alice", times=None)

    with pytest.raises(grpc.aio.AioRpcError, match="UNAVAILABLE"):
        await chain.call(chain.token("alice"))
    await recorder.settle()

    assert counts(recorder, EXCHANGE) == {
        key(
            grpc_obo__token__source="authority",
            grpc_obo__grant="on_behalf_of",
            error__type="AuthorityUnavailableError",
        ): 1
    }


async def test_key_fetch_duration_counts_fetches_by_result(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(start_validators=False)
    await chain.call(chain.token("alice"))  # each API: discovery + JWKS
    await recorder.settle()
    assert counts(recorder, KEYS) == {key(grpc_obo__result="ok"): 4}

    chain.authority.faults.jwks_down = True
    broken = await chains(start_validators=False)  # cold validators, keys endpoint down
    with pytest.raises(grpc.aio.AioRpcError, match="UNAVAILABLE"):
        await broken.call(broken.token("alice"))
    await recorder.settle()

    after = counts(recorder, KEYS)
    failed = {k: n for k, n in after.items() if ("grpc_obo.result", "failed") in k}
    assert after[key(grpc_obo__result="ok")] == 5  # the broken chain's discovery still worked
    assert sum(failed.values()) == 1
    [failure] = failed
    assert {name for name, _ in failure} == {"grpc_obo.result", "error.type"}


async def test_exchanges_in_flight_go_up_during_an_exchange_and_back_to_zero(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    chain.authority.faults.latency = 0.5

    def active() -> int | None:
        points = recorder.metric_points(ACTIVE)
        return sum(p.value for p in points) if points else None

    call = asyncio.ensure_future(chain.call(chain.token("alice")))
    for _ in range(int(WAIT_TIMEOUT / 0.01)):  # poll while the exchange waits on the latency
        if active() == 1 or call.done():
            break
        await asyncio.sleep(0.01)
    seen_in_flight = active()
    await call
    assert seen_in_flight == 1
    assert active() == 0

    chain.authority.faults.latency = 0.0
    await run_every_outcome(chain)  # failures and claims challenges release their count too
    assert active() == 0
    for point in recorder.metric_points(ACTIVE):
        assert dict(point.attributes or {}) == {}


async def test_every_metric_has_only_bounded_attributes(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(start_validators=False)

    await run_every_outcome(chain)
    await recorder.settle()

    grpc_obo_metrics = {n for n in recorder.metric_names() if n.startswith("grpc_obo.")}
    assert grpc_obo_metrics == set(ALLOWED_KEYS)
    for name, allowed in ALLOWED_KEYS.items():
        points = recorder.metric_points(name)
        assert points, name
        seen_keys = {k for p in points for k in dict(p.attributes or {})}
        assert seen_keys <= allowed, name
        for point in points:
            for attribute, value in dict(point.attributes or {}).items():
                if attribute == "error.type":
                    # a class name from grpc_obo's bounded tree (or _OTHER / timeout)
                    assert isinstance(value, str) and value.replace("_", "").isalnum(), value
                    assert len(value) <= 40
                else:
                    assert value in ALLOWED_VALUES[attribute], (name, attribute, value)
    assert set(counts(recorder, VALIDATION)) >= {
        key(grpc_obo__result="accepted"),
        key(grpc_obo__result="refused", error__type="InvalidAudienceError"),
        key(grpc_obo__result="refused", error__type="InvalidSignatureError"),
    }
    assert set(totals(recorder, REFUSALS)) >= {
        key(error__type="MissingTokenError"),
        key(error__type="InsufficientScopeError"),
        key(error__type="InvalidAudienceError"),
        key(error__type="InvalidSignatureError"),
    }
    assert {dict(k).get("error.type") for k in counts(recorder, EXCHANGE)} == {
        None,
        "ClaimsChallengeError",
        "AuthorityUnavailableError",
    }
