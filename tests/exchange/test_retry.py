"""Retries: the pure decisions (`classify`, `RetryPolicy.delay`), then the exchanger acting on
them against the dev authority's faults (503, 429 + Retry-After, dropped connections, latency).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import grpc
import pytest
import requests

from grpc_obo import (
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ConfigurationError,
    ConsentRequiredError,
    InvalidGrantError,
    RetryPolicy,
    TokenExchangeError,
    status_for,
)
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._exchange._retry import Outcome, classify, unavailable
from grpc_obo.devauthority import DevAuthority
from tests.exchange.conftest import FAST_RETRY, Users, client_for
from tests.exchangers import Counted, on_behalf_of

MakeExchanger = Callable[..., Exchanger]

# -- classify: pure ------------------------------------------------------------------------

ENTRA_FIELDS = {
    "error_description": "AADSTS50076: described by the authority. Trace ID: t",
    "error_codes": [50076, "x", 7],
    "suberror": "basic_action",
    "correlation_id": "2b1e2f9a-0000-4000-8000-000000000001",
    "timestamp": "2026-01-01 00:00:00Z",
}


def test_success_is_returned_as_is() -> None:
    result = {"access_token": "at", "expires_in": 3600}
    assert classify(result, status=200) == Outcome(result=result)


@pytest.mark.parametrize(
    "raised",
    [
        requests.ConnectionError("reset"),
        requests.exceptions.ChunkedEncodingError("cut"),
        requests.Timeout("slow"),
        requests.exceptions.ReadTimeout("slow"),
        ConnectionResetError(),
        OSError("network"),
    ],
    ids=type,
)
def test_network_errors_are_retried_without_a_retry_after(raised: BaseException) -> None:
    assert classify(None, raised=raised, status=None, retry_after=5.0) == Outcome(retry=True)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_an_exception_after_a_transient_status_is_retried_with_its_retry_after(
    status: int,
) -> None:
    """MSAL raises for a 5xx instead of returning the body: the status seen decides."""
    outcome = classify(None, raised=RuntimeError("HTTP Error: 503"), status=status, retry_after=2)
    assert outcome == Outcome(retry=True, retry_after=2)


@pytest.mark.parametrize("status", [None, 200, 400, 401])
def test_other_exceptions_are_errors_without_their_message(status: int | None) -> None:
    outcome = classify(None, raised=ValueError("secret-ish detail"), status=status)
    assert not outcome.retry
    assert type(outcome.error) is TokenExchangeError
    assert "ValueError" in str(outcome.error)
    assert "secret-ish" not in str(outcome.error)


def test_no_result_at_all_is_retried() -> None:
    assert classify(None, status=None) == Outcome(retry=True)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_error_body_with_a_transient_status_is_retried(status: int) -> None:
    body = {"error": "invalid_request", "error_codes": [90033]}
    outcome = classify(body, status=status, retry_after=1.5)
    assert (outcome.retry, outcome.retry_after, outcome.error) == (True, 1.5, None)
    # The body is kept so that giving up can report the authority's fields.
    assert unavailable("gave up", outcome).error_codes == (90033,)


@pytest.mark.parametrize("error", ["temporarily_unavailable", "server_error"])
def test_transient_error_codes_are_retried_whatever_the_status(error: str) -> None:
    assert classify({"error": error}, status=400).retry


def test_claims_challenge_carries_entra_fields() -> None:
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    outcome = classify(
        {"error": "interaction_required", "claims": claims, **ENTRA_FIELDS}, status=400
    )
    error = outcome.error
    assert isinstance(error, ClaimsChallengeError)
    assert not outcome.retry
    assert error.claims == claims
    assert error.error == "interaction_required"
    assert error.suberror == "basic_action"
    assert error.error_codes == (50076, 7)  # non-integers dropped
    assert error.correlation_id == ENTRA_FIELDS["correlation_id"]
    assert "described by the authority" not in str(error)  # never echoed


def test_invalid_grant_with_claims_is_a_claims_challenge() -> None:
    """CAE: a revoked session answers invalid_grant with claims the client must send back."""
    outcome = classify({"error": "invalid_grant", "claims": '{"access_token":{}}'}, status=400)
    assert isinstance(outcome.error, ClaimsChallengeError)


def test_interaction_required_without_claims_is_an_invalid_grant() -> None:
    outcome = classify({"error": "interaction_required", "claims": ""}, status=400)
    assert type(outcome.error) is InvalidGrantError
    assert outcome.error.claims is None


def test_invalid_grant_is_an_invalid_grant() -> None:
    outcome = classify({"error": "invalid_grant", "error_codes": [50013]}, status=400)
    assert type(outcome.error) is InvalidGrantError
    assert outcome.error.error_codes == (50013,)


def test_a_missing_consent_is_consent_required() -> None:
    """AADSTS65001 (invalid_grant + consent_required) is the admin's or user's to grant:
    PERMISSION_DENIED, not a reason to sign in again."""
    outcome = classify(
        {"error": "invalid_grant", "suberror": "consent_required", "error_codes": [65001]},
        status=400,
    )
    assert type(outcome.error) is ConsentRequiredError
    assert isinstance(outcome.error, InvalidGrantError)
    assert outcome.error.suberror == "consent_required"
    assert outcome.error.error_codes == (65001,)
    assert status_for(outcome.error) is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"error": "invalid_client", "error_codes": [7000215]}, 401),
        ({"error": "invalid_scope"}, 400),
        ({"error": "unauthorized_client"}, 400),
        ({"error": "invalid_request"}, 400),
        ({}, 400),
        ({"error": 42, "claims": {"not": "a string"}, "error_codes": "x"}, 400),
    ],
)
def test_other_refusals_are_plain_exchange_errors_not_retried(
    body: dict[str, object], status: int
) -> None:
    outcome = classify(body, status=status)
    assert not outcome.retry
    assert type(outcome.error) is TokenExchangeError
    assert outcome.error.claims is None
    assert all(isinstance(c, int) for c in outcome.error.error_codes)


def test_unavailable_keeps_the_last_authority_fields() -> None:
    last = Outcome(result={"error": "temporarily_unavailable", "error_codes": [50196]}, retry=True)
    error = unavailable("3 attempts failed", last)
    assert isinstance(error, AuthorityUnavailableError)
    assert (error.error, error.error_codes) == ("temporarily_unavailable", (50196,))
    assert unavailable("budget", None).error is None


# -- RetryPolicy: pure -----------------------------------------------------------------------


def test_delay_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=1.0)
    rng = random.Random(7)
    for attempt in range(8):
        cap = min(1.0, 0.2 * 2**attempt)
        delays = [policy.delay(attempt, None, rng.random) for _ in range(500)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.9  # the whole range is used...
        assert min(delays) < cap * 0.1  # ...from (almost) zero
    assert policy.delay(3, None, lambda: 0.0) == 0.0
    assert policy.delay(10, None, lambda: 1.0) == 1.0


def test_retry_after_is_a_floor_with_bounded_jitter_on_top() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    rng = random.Random(3)
    for attempt in range(6):
        delays = [policy.delay(attempt, 2.0, rng.random) for _ in range(500)]
        assert all(2.0 <= d <= 2.2 for d in delays)
        assert len(set(delays)) > 1  # replicas do not come back at the same instant
    assert policy.delay(0, 0.0, lambda: 0.5) == pytest.approx(0.1)
    assert policy.delay(0, 3.0, lambda: 0.0) == 3.0


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"base_delay": -0.1},
        {"base_delay": 2.0, "max_delay": 1.0},
        {"budget": 0},
    ],
)
def test_policy_is_checked_at_construction(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)  # type: ignore[arg-type]


# -- the exchanger retrying against the dev authority ---------------------------------------


def obo_requests(authority: DevAuthority, user: str = "alice") -> list[int]:
    return [
        e.status
        for e in authority.requests.entries
        if e.grant == "obo" and e.user_oid == authority.world.user(user).oid
    ]


async def test_one_503_then_success(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.fail(503, user="alice", times=1)
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    assert obo_requests(authority) == [503, 200]
    assert counted.exchanges == 1  # one fetch, two HTTP attempts


async def test_throttle_retry_after_is_honoured(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.throttle(retry_after=1, user="alice", times=1)
    exchanger = make_exchanger()
    identity = await users.identity("alice")
    started = time.monotonic()
    await exchanger.acquire([downstream_scope], identity=identity)
    assert time.monotonic() - started >= 1.0
    assert obo_requests(authority) == [429, 200]


async def test_dropped_connection_then_success(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.drop_connection(user="alice", times=1)
    exchanger = make_exchanger()
    await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    assert len(obo_requests(authority)) == 2
    assert obo_requests(authority)[-1] == 200


async def test_unavailable_discovery_is_retried_when_the_client_is_built(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    identity = await users.identity("alice")
    authority.faults.fail(503, endpoint="discovery", times=1)
    exchanger = make_exchanger()
    await exchanger.acquire([downstream_scope], identity=identity)
    assert authority.requests.count(endpoint="discovery", status=503) == 1
    assert obo_requests(authority) == [200]


async def test_max_attempts_exhausted_is_authority_unavailable(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.throttle(retry_after=0, user="alice", times=None)
    exchanger = make_exchanger(retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02))
    with pytest.raises(AuthorityUnavailableError) as caught:
        await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    assert obo_requests(authority) == [429, 429, 429]
    assert caught.value.error == "temporarily_unavailable"
    assert 50196 in caught.value.error_codes


async def test_503_until_max_attempts_is_authority_unavailable(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.fail(503, user="alice", times=None)
    exchanger = make_exchanger(retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02))
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    assert obo_requests(authority) == [503, 503]


async def test_retry_budget_exhausted_stops_before_waiting(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """A Retry-After beyond the budget: give up now rather than sleep past the deadline."""
    authority.faults.throttle(retry_after=5, user="alice", times=None)
    exchanger = make_exchanger(retry=RetryPolicy(max_attempts=10, base_delay=0.01, budget=1.0))
    identity = await users.identity("alice")
    started = time.monotonic()
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=identity)
    assert time.monotonic() - started < 0.9
    assert obo_requests(authority) == [429]


async def test_a_failure_is_not_cached(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.fail(503, user="alice", times=3)
    exchanger = make_exchanger()  # 3 attempts: all fail
    identity = await users.identity("alice")
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=identity)
    await exchanger.acquire([downstream_scope], identity=identity)
    assert obo_requests(authority) == [503, 503, 503, 200]


async def test_caller_timeout_fails_fast_while_the_shared_exchange_fills_the_cache(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    # Build the MSAL client first so only the token request is slow.
    await exchanger.acquire([downstream_scope], identity=await users.identity("bob"))
    alice = await users.identity("alice")
    authority.faults.latency = 0.6
    started = time.monotonic()
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=alice, timeout=0.1)
    assert time.monotonic() - started < 0.4
    key = exchanger.cache_key([downstream_scope], identity=alice)
    for _ in range(100):
        if await exchanger.cache.get(key) is not None:
            break
        await asyncio.sleep(0.05)
    assert await exchanger.cache.get(key) is not None
    authority.faults.latency = 0.0
    await exchanger.acquire([downstream_scope], identity=alice, timeout=0.5)
    assert obo_requests(authority) == [200]


async def test_no_time_left_fails_without_a_request(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=await users.identity(), timeout=0)
    assert authority.requests.count(endpoint="token") == 0


async def test_an_earlier_503_on_the_same_thread_does_not_make_a_local_error_transient(
    authority: DevAuthority, users: Users, downstream_scope: str
) -> None:
    """The HTTP facts are per worker thread: a status left over from another user's request
    must not classify a later attempt that never reached the network."""
    async with on_behalf_of(client_for(authority), retry=FAST_RETRY, max_workers=1) as exchanger:
        authority.faults.fail(503, user="alice", times=None)
        with pytest.raises(AuthorityUnavailableError):
            await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
        before = authority.requests.count(endpoint="token")
        # MSAL refuses reserved scopes itself (ValueError), before any request.
        with pytest.raises(TokenExchangeError) as caught:
            await exchanger.acquire(
                ["openid", downstream_scope], identity=await users.identity("bob")
            )
        assert type(caught.value) is TokenExchangeError
        assert authority.requests.count(endpoint="token") == before


async def test_close_waits_for_the_request_in_flight(
    authority: DevAuthority, users: Users, downstream_scope: str
) -> None:
    """After close() nothing more reaches the authority (no request lands in a later test)."""
    exchanger = on_behalf_of(client_for(authority), retry=FAST_RETRY)
    identity = await users.identity("alice")
    authority.faults.latency = 0.3
    with pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], identity=identity, timeout=0.05)
    await exchanger.close()
    logged = len(authority.requests.entries)
    assert logged >= 1  # the discovery request (at least) completed before close returned
    # A check that nothing arrives can only wait: longer than the 0.3 s latency any request
    # still on its way would take.
    await asyncio.sleep(0.4)
    assert len(authority.requests.entries) == logged
