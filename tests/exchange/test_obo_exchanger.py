"""The On-Behalf-Of exchanger core against the dev authority with real MSAL: what comes back,
and how often we ask.

Incoming identities are built the real way: a token minted by the authority for the Original API,
validated by a `TokenValidator`. Exchange counts come from the authority's own request log and
from the observer hooks telemetry gets (`tests.exchangers.Counted`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import Callable

import grpc
import pytest

from grpc_obo import (
    AppTokenNotAllowedError,
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ConfigurationError,
    Identity,
    IdentityKind,
    InvalidGrantError,
    MissingIdentityError,
    SecretToken,
    TokenCache,
    TokenExchangeError,
    status_for,
    use_identity,
    www_authenticate_for,
)
from grpc_obo._exchange import _runner
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import CONTOSO, FABRIKAM, DevAuthority
from tests.exchange.conftest import Users, client_for, verified_claims
from tests.exchangers import Counted, on_behalf_of

MakeExchanger = Callable[..., Exchanger]


def obo_count(authority: DevAuthority, user: str | None = None) -> int:
    return authority.requests.count(grant="obo", user=user)


# -- the exchanged token -------------------------------------------------------------------


async def test_exchanged_token_is_for_the_downstream_api_as_the_same_user(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """aud = Downstream, same oid/tid, azp = Original, scp = Data.Read; signature verifies."""
    exchanger = make_exchanger()
    identity = await users.identity("alice")
    with use_identity(identity):
        token = await exchanger.acquire([downstream_scope])
    assert isinstance(token, SecretToken)
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert claims["oid"] == identity.oid == authority.world.user("alice").oid
    assert claims["tid"] == identity.tid == CONTOSO
    assert claims["azp"] == authority.world.app("original").client_id
    assert claims["scp"] == "Data.Read"
    assert "idtyp" not in claims or claims["idtyp"] == "user"
    assert obo_count(authority, "alice") == 1


async def test_identity_argument_is_used_instead_of_the_context(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    alice, bob = await users.identity("alice"), await users.identity("bob")
    with use_identity(alice):
        token = await exchanger.acquire([downstream_scope], identity=bob)
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert claims["oid"] == bob.oid


async def test_carol_is_exchanged_at_her_own_tenant(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """A multi-tenant middle tier goes to the tenant that issued the user's token."""
    exchanger = make_exchanger()
    carol = await users.identity("carol")
    token = await exchanger.acquire([downstream_scope], identity=carol)
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert (claims["tid"], claims["oid"]) == (FABRIKAM, authority.world.user("carol").oid)
    [request] = [e for e in authority.requests.entries if e.grant == "obo"]
    assert request.path.startswith(f"/{FABRIKAM}/")


async def test_client_capabilities_reach_the_exchanged_token(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """`cp1` is declared to the authority (MSAL sends it as xms_cc in the claims parameter)."""
    exchanger = make_exchanger(client_for(authority, client_capabilities=("cp1",)))
    token = await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert "cp1" in claims.get("xms_cc", [])


# -- caching and single flight --------------------------------------------------------------


async def test_second_acquire_for_the_same_user_token_makes_no_new_exchange(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    identity = await users.identity("alice")
    with use_identity(identity):
        first = await exchanger.acquire([downstream_scope])
        second = await exchanger.acquire([downstream_scope])
    assert first == second
    assert obo_count(authority) == 1
    assert counted.exchanges == 1


async def test_a_new_user_token_is_a_new_exchange(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """The key is the assertion, not the user: a re-issued token is exchanged again."""
    exchanger = make_exchanger()
    await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    await exchanger.acquire([downstream_scope], identity=await users.identity("alice"))
    assert obo_count(authority, "alice") == 2


async def test_thousand_concurrent_first_calls_of_one_user_make_exactly_one_exchange(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    identity = await users.identity("alice")

    async def call() -> SecretToken:
        with use_identity(identity):
            return await exchanger.acquire([downstream_scope])

    tokens = await asyncio.gather(*(call() for _ in range(1000)))
    assert len({t.reveal() for t in tokens}) == 1
    assert obo_count(authority) == 1
    assert counted.exchanges == 1


async def test_users_never_get_each_others_tokens_under_concurrency(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """Alice, Bob and Carol (another tenant), two tokens each, 600 interleaved calls."""
    exchanger = make_exchanger()
    identities = [await users.identity(name) for name in ("alice", "bob", "carol") for _ in "ab"]
    calls = [identity for identity in identities for _ in range(100)]
    random.Random(4).shuffle(calls)

    async def call(identity: Identity) -> tuple[Identity, SecretToken]:
        with use_identity(identity):
            await asyncio.sleep(0)  # interleave with the other users' calls
            return identity, await exchanger.acquire([downstream_scope])

    results = await asyncio.gather(*(call(identity) for identity in calls))
    downstream = authority.world.app("downstream").client_id
    by_assertion: dict[str, set[str]] = {}
    for identity, token in results:
        claims = verified_claims(authority, token.reveal(), audience=downstream)
        assert (claims["tid"], claims["oid"]) == (identity.tid, identity.oid)
        by_assertion.setdefault(identity.token.reveal(), set()).add(token.reveal())
    # One exchange per incoming token, and every caller with that token got its result.
    assert all(len(tokens) == 1 for tokens in by_assertion.values())
    assert len({t for tokens in by_assertion.values() for t in tokens}) == 6
    assert obo_count(authority) == 6
    assert {u: obo_count(authority, u) for u in ("alice", "bob", "carol")} == {
        "alice": 2,
        "bob": 2,
        "carol": 2,
    }


async def test_scopes_are_part_of_the_key_in_any_order(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    identity = await users.identity("alice")
    graph = "https://graph.microsoft.com/User.Read"
    with use_identity(identity):
        await exchanger.acquire([downstream_scope])
        assert exchanger.cache_key([downstream_scope, graph]) == exchanger.cache_key(
            [graph, downstream_scope]
        )
        assert exchanger.cache_key([downstream_scope]) != exchanger.cache_key([graph])
        with pytest.raises(ConfigurationError):
            await exchanger.acquire(downstream_scope)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            await exchanger.acquire([])
    assert obo_count(authority) == 1


async def test_invalidate_makes_the_next_acquire_exchange_again(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """What the client interceptor does when the downstream answers with a claims challenge."""
    exchanger = make_exchanger()
    with use_identity(await users.identity("alice")):
        first = await exchanger.acquire([downstream_scope])
        await exchanger.invalidate([downstream_scope])
        second = await exchanger.acquire([downstream_scope])
    assert first != second
    assert obo_count(authority) == 2


# -- no user, no exchange -------------------------------------------------------------------


async def test_no_identity_in_context_is_a_clear_error_never_an_app_token(
    authority: DevAuthority, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    with pytest.raises(MissingIdentityError):
        await exchanger.acquire([downstream_scope])
    with use_identity(None), pytest.raises(MissingIdentityError):
        await exchanger.acquire([downstream_scope])
    assert authority.requests.count(endpoint="token") == 0
    assert counted.exchanges == 0


async def test_app_identity_is_refused_before_any_request(
    authority: DevAuthority, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    daemon = authority.world.app("daemon")
    app = Identity(
        tid=CONTOSO,
        oid=None,
        sub=daemon.client_id,
        kind=IdentityKind.APP,
        roles=frozenset({"Data.Read.All"}),
        client_id=daemon.client_id,
        token=SecretToken(authority.mint_app_token("daemon", audience="original", roles=[])),
    )
    with use_identity(app), pytest.raises(AppTokenNotAllowedError) as caught:
        await exchanger.acquire([downstream_scope])
    assert status_for(caught.value) is grpc.StatusCode.PERMISSION_DENIED
    assert authority.requests.count(endpoint="token") == 0


# -- refusals ------------------------------------------------------------------------------


async def test_claims_challenge_surfaces_with_the_challenge_and_www_authenticate(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    challenge = authority.faults.require_claims("alice")
    exchanger = make_exchanger()
    with use_identity(await users.identity("alice")), pytest.raises(ClaimsChallengeError) as caught:
        await exchanger.acquire([downstream_scope])
    error = caught.value
    assert error.claims == challenge.claims
    assert json.loads(error.claims)["access_token"]["capolids"]["essential"] is True
    assert error.error == "interaction_required"
    assert error.suberror == "basic_action"
    assert 50076 in error.error_codes
    assert error.correlation_id
    assert status_for(error) is grpc.StatusCode.UNAUTHENTICATED
    header = www_authenticate_for(error)
    assert header is not None
    assert 'error="insufficient_claims"' in header
    assert f'claims="{base64.b64encode(challenge.claims.encode()).decode()}"' in header
    # Not retried (a challenge is not transient), not cached: Bob is unaffected.
    assert obo_count(authority, "alice") == 1
    await exchanger.acquire([downstream_scope], identity=await users.identity("bob"))


async def test_a_token_that_satisfied_the_challenge_is_exchanged(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    authority.faults.require_claims("alice")
    exchanger = make_exchanger()
    mfa = await users.identity("alice", amr=("pwd", "mfa"))
    token = await exchanger.acquire([downstream_scope], identity=mfa)
    assert (
        verified_claims(
            authority, token.reveal(), audience=authority.world.app("downstream").client_id
        )["oid"]
        == authority.world.user("alice").oid
    )


async def test_expired_assertion_is_an_invalid_grant(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """Built directly: the validator would (rightly) refuse this token before any exchange."""
    alice = authority.world.user("alice")
    expired = users.token("alice", lifetime=-600)
    identity = Identity(
        tid=alice.tenant_id,
        oid=alice.oid,
        sub="sub",
        kind=IdentityKind.USER,
        scopes=frozenset({"access_as_user"}),
        token=SecretToken(expired),
    )
    exchanger = make_exchanger()
    with pytest.raises(InvalidGrantError) as caught:
        await exchanger.acquire([downstream_scope], identity=identity)
    assert caught.value.error == "invalid_grant"
    assert 500133 in caught.value.error_codes
    assert status_for(caught.value) is grpc.StatusCode.UNAUTHENTICATED
    assert obo_count(authority) == 1  # not retried
    assert expired not in str(caught.value)


async def test_unconsented_scope_is_an_invalid_grant_and_is_asked_again_next_time(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger
) -> None:
    """Data.Write is not consented for Original. The refusal is not replayed from MSAL's
    60 s HTTP 400 cache either: a later call (consent may have been granted) asks again."""
    write = f"{authority.world.app('downstream').app_id_uri}/Data.Write"
    exchanger = make_exchanger()
    with use_identity(await users.identity("alice")):
        for _ in range(2):
            with pytest.raises(InvalidGrantError) as caught:
                await exchanger.acquire([write])
            assert caught.value.error == "invalid_grant"
            assert caught.value.suberror == "consent_required"
            assert 65001 in caught.value.error_codes
    assert obo_count(authority) == 2


async def test_unknown_scope_is_a_token_exchange_error_not_retried(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger
) -> None:
    bogus = f"{authority.world.app('downstream').app_id_uri}/Nope"
    exchanger = make_exchanger()
    with pytest.raises(TokenExchangeError) as caught:
        await exchanger.acquire([bogus], identity=await users.identity("alice"))
    assert type(caught.value) is TokenExchangeError
    assert caught.value.error == "invalid_scope"
    assert status_for(caught.value) is grpc.StatusCode.INTERNAL
    assert obo_count(authority) == 1


# -- one user's failure is never another user's ----------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 503}, id="503"),
        pytest.param({"status": 429, "retry_after": 30}, id="429-retry-after"),
        pytest.param({"status": 500, "retry_after": 30}, id="500-retry-after"),
    ],
)
async def test_one_users_failure_does_not_fail_another_user(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    fault: dict[str, float],
) -> None:
    """MSAL's throttle key leaves out the OBO assertion: with its default http_cache, Bob's
    exchange right after Alice's failure would be answered from memory without a request."""
    alice, bob = await users.identity("alice"), await users.identity("bob")
    exchanger = make_exchanger()
    status = int(fault["status"])
    authority.faults.fail(status, user="alice", times=None, retry_after=fault.get("retry_after"))
    # Retry-After 30 s exceeds the policy's budget: Alice fails at once, no waiting.
    with pytest.raises(AuthorityUnavailableError) as caught:
        await exchanger.acquire([downstream_scope], identity=alice)
    assert status_for(caught.value) is grpc.StatusCode.UNAVAILABLE
    token = await exchanger.acquire([downstream_scope], identity=bob)
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert claims["oid"] == bob.oid
    assert authority.requests.count(grant="obo", user="bob", ok=True) == 1
    assert authority.requests.count(grant="obo", user="alice", status=status) >= 1


async def test_msal_default_http_cache_would_throttle_across_users(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trap the test above guards against, shown with MSAL's default (a plain dict): if
    this stops failing Bob, MSAL changed and `NoHttpCache` may no longer be needed."""
    monkeypatch.setattr(_runner, "NoHttpCache", dict)
    alice, bob = await users.identity("alice"), await users.identity("bob")
    exchanger = make_exchanger()
    authority.faults.fail(503, user="alice", times=None)
    with pytest.raises(TokenExchangeError):
        await exchanger.acquire([downstream_scope], identity=alice)
    # MSAL replays Alice's 503 for Bob from memory (raising for the 5xx), never asking.
    with pytest.raises(TokenExchangeError):
        await exchanger.acquire([downstream_scope], identity=bob)
    assert obo_count(authority, "bob") == 0


# -- proactive refresh -----------------------------------------------------------------------


class ShiftedClock:
    """Real time plus an offset the test moves forward (tokens carry real expiry times)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def wait_for(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_token_past_refresh_on_is_served_and_refreshed_in_the_background(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """1 h tokens without refresh_in: refresh from half their life, off the request path."""
    clock = ShiftedClock()
    exchanger = make_exchanger(cache=TokenCache(clock=clock))
    with use_identity(await users.identity("alice")):
        first = await exchanger.acquire([downstream_scope])
        clock.offset = 1900  # past refresh_on (30 min), well before expiry - margin
        authority.faults.latency = 0.3
        started = time.monotonic()
        assert await exchanger.acquire([downstream_scope]) == first  # not waiting for it
        assert time.monotonic() - started < 0.2
        await wait_for(lambda: authority.requests.count(grant="obo", ok=True) == 2)
        authority.faults.latency = 0.0
        key = exchanger.cache_key([downstream_scope])
        await wait_for(lambda: not exchanger.cache._flight.running(key))
        clock.offset = 0  # else the new token would be due for refresh at once, too
        second = await exchanger.acquire([downstream_scope])
    assert second != first
    assert obo_count(authority) == 2


async def test_a_failed_background_refresh_keeps_serving_the_cached_token(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ShiftedClock()
    exchanger = make_exchanger(cache=TokenCache(clock=clock))
    with use_identity(await users.identity("alice")):
        first = await exchanger.acquire([downstream_scope])
        authority.faults.fail(503, user="alice", times=None)
        clock.offset = 1900
        assert await exchanger.acquire([downstream_scope]) == first
        await wait_for(lambda: "background refresh" in caplog.text)
        assert await exchanger.acquire([downstream_scope]) == first
    assert authority.requests.count(grant="obo", ok=True) == 1, authority.requests.entries


async def test_a_burst_of_distinct_users_reuses_connections(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As many pooled connections as MSAL worker threads (16): none discarded in a burst."""
    caplog.set_level(logging.WARNING, logger="urllib3")
    exchanger = make_exchanger()
    for _ in range(2):
        identities = [await users.identity(("alice", "bob", "carol")[i % 3]) for i in range(48)]
        await asyncio.gather(
            *(exchanger.acquire([downstream_scope], identity=i) for i in identities)
        )
    assert obo_count(authority) == 96
    assert "Connection pool is full" not in caplog.text


# -- memory: the cache-key memo is bounded by the cache's own setting (issue 23) ---------------


async def test_cache_key_memo_holds_no_more_tokens_than_the_cache(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """The memo of cache keys (incoming token -> key) is an LRU at the store's `max_entries`:
    tokens the cache has let go of are let go of here too, the least recently used first."""
    from grpc_obo import MemoryTokenStore

    exchanger = make_exchanger(cache=TokenCache(store=MemoryTokenStore(max_entries=3)))
    identities = [await users.identity(name) for name in ("alice", "bob", "carol", "alice")]
    for identity in identities:
        await exchanger.acquire([downstream_scope], identity=identity)
    await exchanger.acquire([downstream_scope], identity=identities[1])  # bob: most recent
    remembered = [memo[0] for memo in exchanger._keys]
    assert len(remembered) == 3
    assert identities[0].token.reveal() not in remembered  # the oldest went first
    assert remembered[-1] == identities[1].token.reveal()
    assert len(exchanger.cache.store) <= 3  # type: ignore[arg-type]


async def test_the_memo_bound_follows_the_store(authority: DevAuthority) -> None:
    from grpc_obo import MemoryTokenStore

    assert TokenCache().max_entries == 100_000
    assert TokenCache(store=MemoryTokenStore(max_entries=42)).max_entries == 42
    async with on_behalf_of(
        client_for(authority), cache=TokenCache(store=MemoryTokenStore(max_entries=42))
    ) as exchanger:
        assert exchanger._keys.maxsize == 42


async def test_what_cached_users_share_is_held_once(
    users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """Per cached user the exchanger keeps the tokens and the key; the scope set is shared."""
    exchanger = make_exchanger()
    for name in ("alice", "bob"):
        # A new list each call, as a caller building its scopes per request would pass.
        await exchanger.acquire([downstream_scope], identity=await users.identity(name))
    first, second = (memo[1] for memo in exchanger._keys)
    assert first == second == (downstream_scope,)
    assert first is second
