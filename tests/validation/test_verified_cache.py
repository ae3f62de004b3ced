"""The verified-token cache: hits skip RSA verification, entries end at `exp` and when their key
leaves the key set, and the cache stays within its bound."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable

import pytest

import grpc_obo
from grpc_obo import InvalidSignatureError, TokenValidator
from grpc_obo._validation import _validator
from grpc_obo._validation._cache import ENTRY_OVERHEAD, VerifiedTokenCache
from grpc_obo._validation._keys import StaticKeySource
from tests.validation.tokens import (
    API_CLIENT_ID,
    NOW,
    TENANT,
    FakeClock,
    jwk,
    jwks,
    mint,
    v2_claims,
)


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count RS256 verifications done by the validator."""
    calls: list[int] = []
    real = _validator.verify_rs256

    def counting(*args: object) -> bool:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_validator, "verify_rs256", counting)
    return calls


async def test_a_repeat_token_costs_no_rsa_verification(
    validator: TokenValidator, verify_calls: list[int]
) -> None:
    token = mint(v2_claims())
    first = await validator.validate(token)
    for _ in range(100):
        assert await validator.validate(token) is first
    assert len(verify_calls) == 1


async def test_entry_ends_at_exp_plus_leeway(
    validator: TokenValidator, clock: FakeClock, verify_calls: list[int]
) -> None:
    token = mint(v2_claims(exp=NOW + 100))
    await validator.validate(token)
    clock.advance(160)  # exp + leeway exactly: still valid
    await validator.validate(token)
    assert len(verify_calls) == 1
    clock.advance(1)
    with pytest.raises(grpc_obo.ExpiredTokenError):
        await validator.validate(token)


async def test_entry_is_dropped_when_its_key_leaves_the_set(
    validator: TokenValidator, verify_calls: list[int]
) -> None:
    token = mint(v2_claims())
    await validator.validate(token)
    # Swap in a key set without key-a, as a refresh would.
    source = validator.key_source
    assert isinstance(source, StaticKeySource)
    source._keys = StaticKeySource(jwks(jwk("key-b")))._keys
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token)


async def test_key_with_the_same_kid_but_new_material_drops_entries(
    validator: TokenValidator,
) -> None:
    token = mint(v2_claims())
    await validator.validate(token)
    source = validator.key_source
    assert isinstance(source, StaticKeySource)
    # The authority reuses the name "key-a" for different key material.
    source._keys = StaticKeySource(jwks(jwk("key-b", kid="key-a")))._keys
    with pytest.raises(grpc_obo.InvalidSignatureError):
        await validator.validate(token)


async def test_failures_are_not_cached(validator: TokenValidator, verify_calls: list[int]) -> None:
    token = mint(v2_claims(aud="api://not-ours"))
    for _ in range(3):
        with pytest.raises(grpc_obo.InvalidAudienceError):
            await validator.validate(token)
    assert len(verify_calls) == 3


async def test_cache_is_bounded_lru(
    make_validator: Callable[..., TokenValidator], verify_calls: list[int]
) -> None:
    validator = make_validator(verified_cache_size=3)
    tokens = [mint(v2_claims(uti=str(i))) for i in range(4)]
    for token in tokens[:3]:
        await validator.validate(token)
    await validator.validate(tokens[0])  # touch: tokens[1] is now the oldest
    await validator.validate(tokens[3])  # evicts tokens[1]
    assert len(verify_calls) == 4
    await validator.validate(tokens[0])
    await validator.validate(tokens[2])
    assert len(verify_calls) == 4
    await validator.validate(tokens[1])
    assert len(verify_calls) == 5


async def test_cache_can_be_turned_off(
    make_validator: Callable[..., TokenValidator], verify_calls: list[int]
) -> None:
    validator = make_validator(verified_cache_size=0)
    token = mint(v2_claims())
    await validator.validate(token)
    await validator.validate(token)
    assert len(verify_calls) == 2


async def test_cache_is_keyed_by_the_exact_token_in_this_process_only(
    validator: TokenValidator, verify_calls: list[int]
) -> None:
    """The owner's decision (issue 12): the in-process cache keys by the token string (keyed
    per-process hash + exact comparison); nothing that leaves the process does."""
    token = mint(v2_claims())
    identity = await validator.validate(token)
    cache = validator._cache
    assert isinstance(cache, VerifiedTokenCache)
    assert list(cache._entries) == [token]
    assert "eyJ" not in repr(cache)
    # One character off (a forged signature) is never a hit: it gets a full validation.
    head, _, signature = token.rpartition(".")
    forged = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert validator.cached(forged) is None
    with pytest.raises(InvalidSignatureError):
        await validator.validate(forged)

    # A str subclass could lie in __eq__/__hash__: it is never looked up.
    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash(token)

    assert validator.cached(Sneaky("x")) is None
    assert validator.cached(token) is identity
    assert len(verify_calls) == 2  # the original and the forged token, nothing else


class TestCachedLookup:
    """`TokenValidator.cached`: the synchronous, I/O-free answer for repeat tokens."""

    async def test_none_until_validated_then_the_same_identity(
        self, validator: TokenValidator, verify_calls: list[int]
    ) -> None:
        token = mint(v2_claims())
        assert validator.cached(token) is None  # never "invalid": only "ask validate"
        identity = await validator.validate(token)
        assert validator.cached(token) is identity
        assert len(verify_calls) == 1

    async def test_none_after_exp_plus_leeway(
        self, validator: TokenValidator, clock: FakeClock
    ) -> None:
        token = mint(v2_claims(exp=NOW + 100))
        await validator.validate(token)
        clock.advance(160)
        assert validator.cached(token) is not None
        clock.advance(1)
        assert validator.cached(token) is None

    async def test_none_when_the_signing_key_is_withdrawn(self, validator: TokenValidator) -> None:
        token = mint(v2_claims())
        await validator.validate(token)
        source = validator.key_source
        assert isinstance(source, StaticKeySource)
        source._keys = StaticKeySource(jwks(jwk("key-b")))._keys  # as a refresh would
        assert validator.cached(token) is None

    @pytest.mark.parametrize("token", [b"bytes", None, "x" * (64 * 1024 + 1)])
    async def test_unusable_input_is_a_miss_not_an_error(
        self, validator: TokenValidator, token: object
    ) -> None:
        assert validator.cached(token) is None  # type: ignore[arg-type]

    async def test_a_token_that_differs_by_one_character_misses(
        self, validator: TokenValidator
    ) -> None:
        token = mint(v2_claims())
        await validator.validate(token)
        assert validator.cached(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


# -- memory (issue 23: 100,000 users on default settings) -----------------------------------


def test_the_default_budget_is_memory_not_a_count() -> None:
    options = grpc_obo.ValidatorOptions(tenant=TENANT, audiences=frozenset({API_CLIENT_ID}))
    assert options.verified_cache_bytes == 256 * 2**20
    # 100,000 users' Entra-sized tokens (1.3 KB) fit the default budget.
    assert options.verified_cache_bytes >= 100_000 * (1_309 + ENTRY_OVERHEAD)
    assert options.verified_cache_size >= 100_000


async def test_cache_stays_within_its_memory_budget_least_recently_used_first(
    make_validator: Callable[..., TokenValidator], verify_calls: list[int]
) -> None:
    validator = make_validator(verified_cache_bytes=2**20)
    cache = validator._cache
    assert isinstance(cache, VerifiedTokenCache)
    tokens = [mint(v2_claims(uti=str(i), padding="x" * 1000)) for i in range(700)]
    for token in tokens:
        await validator.validate(token)
        assert cache.bytes <= 2**20
    held = len(cache)
    assert 300 < held < 700  # the budget, not the count, decided
    assert cache.bytes == sum(sys.getsizeof(t) + ENTRY_OVERHEAD for t in tokens[-held:])
    before = len(verify_calls)
    await validator.validate(tokens[-1])  # recent: a hit
    assert len(verify_calls) == before
    await validator.validate(tokens[0])  # evicted first: verified again
    assert len(verify_calls) == before + 1


async def test_what_users_share_is_held_once(validator: TokenValidator) -> None:
    """Identities of one tenant and application share their common parts: an entry's memory is
    its token and what is its user's own."""
    first, second = [
        await validator.validate(mint(v2_claims(oid=f"00000000-0000-0000-0000-00000000000{i}")))
        for i in (1, 2)
    ]
    assert first.oid != second.oid
    for name in ("tid", "issuer", "audience", "client_id", "token_version", "scopes", "roles"):
        assert getattr(first, name) is getattr(second, name), name


async def test_entry_overhead_covers_what_an_entry_holds(validator: TokenValidator) -> None:
    """The budget charges each entry its token plus ENTRY_OVERHEAD: measured here (allocations,
    not time) with user-shaped claims, the rest of an entry stays within it."""
    tokens = [
        mint(
            v2_claims(
                oid=f"00000000-0000-0000-0000-{i:012d}",
                sub=f"pairwise-subject-{i:027d}",
                name=f"A Person With A Name {i}",
                preferred_username=f"person.{i}@contoso.example",
            )
        )
        for i in range(400)
    ]
    await validator.validate(tokens[0])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens[1:]:
            await validator.validate(token)
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / (len(tokens) - 1)
    finally:
        tracemalloc.stop()
    assert per_entry <= ENTRY_OVERHEAD
