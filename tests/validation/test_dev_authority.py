"""`TokenValidator` against the dev authority over HTTPS: discovery + JWKS fetched for real.

Covers the accepted shapes (v2 and v1 delegated tokens, app-only tokens) with the Identity fields
each yields, the refusals (audience, tenant, expiry, tampering, Graph, ID tokens) with their class
and reason, the unknown-`kid` flood bound and how quickly keys recover (a junk `kid` before a key
rollover, the first unknown `kid`, a failed first fetch), an authority that goes down after (and
before) the keys were fetched, and the no-token-text rule for everything these tests saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import grpc_obo
from grpc_obo import (
    ClientNotAllowedError,
    ExpiredTokenError,
    IdentityKind,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSignatureError,
    KeySourceUnavailableError,
    NotAnAccessTokenError,
    NotYetValidError,
    TenantNotAllowedError,
    TokenValidator,
    UnknownKeyError,
)
from grpc_obo.devauthority import DevAuthority
from tests.validation.devtokens import (
    CONTOSO,
    FABRIKAM,
    ShiftedClock,
    dev_options,
    kid_of,
    leaked,
    record,
    tampered,
    with_kid,
)
from tests.validation.tokens import FakeClock

MakeValidator = Callable[..., TokenValidator]

# Exception texts seen by this module's tests, searched for tokens at the end of each test.
SEEN_TEXTS: list[str] = []


@pytest.fixture(autouse=True)
def _no_token_text(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    SEEN_TEXTS.clear()
    yield
    texts = [
        *SEEN_TEXTS,
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *(str(r.__dict__) for r in caplog.records),
    ]
    assert not leaked(texts), "token text reached a log record or an exception"


@pytest.fixture
async def make_validator() -> AsyncIterator[MakeValidator]:
    """`make(authority, api="original", multi_tenant=False, **options)`; all closed after."""
    made: list[TokenValidator] = []

    def make(
        authority: DevAuthority,
        api: str = "original",
        telemetry: grpc_obo.Telemetry | None = None,
        **overrides: Any,
    ) -> TokenValidator:
        validator = TokenValidator(dev_options(authority, api, **overrides), telemetry=telemetry)
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.close()


async def refused(validator: TokenValidator, token: str, cls: type[Exception]) -> Any:
    """The error `validator` raises for `token` (checked to be a `cls`, and token-free)."""
    with pytest.raises(cls) as caught:
        await validator.validate(token)
    exc = caught.value
    SEEN_TEXTS.extend([str(exc), repr(exc), *map(str, exc.args)])
    return exc


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def requests_to(authority: DevAuthority) -> tuple[int, int]:
    """(discovery, jwks) requests the authority has answered so far."""
    return (
        authority.requests.count(endpoint="discovery"),
        authority.requests.count(endpoint="jwks"),
    )


# -- accepted tokens -------------------------------------------------------------------------


class TestAccepted:
    async def test_v2_user_token(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority)
        token = record(authority.mint_user_token("alice", capabilities=["cp1"]))
        identity = await validator.validate(token)

        alice = authority.world.user("alice")
        original = authority.world.app("original")
        assert identity.kind is IdentityKind.USER
        assert (identity.tid, identity.oid) == (CONTOSO, alice.oid)
        assert identity.sub == claims_of(token)["sub"] != alice.oid  # pairwise, not the oid
        assert identity.scopes == frozenset({"access_as_user"})
        assert identity.roles == frozenset()
        assert identity.client_id == authority.world.app("client").client_id
        assert identity.username == "alice@contoso.example"
        assert identity.name == "Alice Example"
        assert identity.audience == original.client_id
        assert identity.issuer == authority.issuer(2) == f"{authority.base_url}/{CONTOSO}/v2.0"
        assert identity.token_version == "2.0"
        assert identity.expires_at == claims_of(token)["exp"]
        assert identity.client_capabilities == frozenset({"cp1"})
        assert identity.token.reveal() == token
        assert identity.principal == f"{CONTOSO}/{alice.oid}"
        # Discovery once, JWKS once, both over HTTPS with the authority's own CA.
        assert requests_to(authority) == (1, 1)
        assert await validator.validate(token) == identity  # the verified-token cache
        assert requests_to(authority) == (1, 1)

    async def test_v1_user_token_for_the_app_id_uri(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        original = authority.world.app("original")
        assert original.app_id_uri is not None
        validator = make_validator(authority)
        token = record(
            authority.mint_user_token("bob", version=1, audience_claim=original.app_id_uri)
        )
        identity = await validator.validate(token)

        assert identity.kind is IdentityKind.USER
        assert (identity.tid, identity.oid) == (CONTOSO, authority.world.user("bob").oid)
        assert identity.scopes == frozenset({"access_as_user"})
        assert identity.client_id == authority.world.app("client").client_id  # from `appid`
        assert identity.username == "bob@contoso.example"  # from `upn`
        assert identity.audience == original.app_id_uri
        assert identity.issuer == authority.issuer(1) == f"{authority.base_url}/{CONTOSO}/"
        assert identity.token_version == "1.0"

    @pytest.mark.parametrize("version", [1, 2])
    async def test_app_token_is_classified_app(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator, version: int
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority, "downstream")
        token = record(authority.mint_app_token("daemon", audience="downstream", version=version))
        assert claims_of(token)["idtyp"] == "app"
        identity = await validator.validate(token)

        assert identity.kind is IdentityKind.APP
        assert identity.is_app and not identity.is_user
        assert identity.roles == frozenset({"Data.Read.All"})
        assert identity.scopes == frozenset()
        assert identity.client_id == authority.world.app("daemon").client_id
        assert identity.tid == CONTOSO
        assert identity.oid == claims_of(token)["oid"]  # the daemon's service principal
        assert identity.username is None
        assert identity.token_version == ("2.0" if version == 2 else "1.0")

    async def test_multi_tenant_validator_accepts_both_allowed_tenants(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority, multi_tenant=True)
        carol = await validator.validate(record(authority.mint_user_token("carol")))
        alice = await validator.validate(record(authority.mint_user_token("alice")))
        assert carol.tid == FABRIKAM and alice.tid == CONTOSO
        assert carol.issuer == f"{authority.base_url}/{FABRIKAM}/v2.0"
        assert carol.oid == authority.world.user("carol").oid
        # The multi-tenant key source used the `organizations` endpoints.
        paths = {e.path for e in authority.requests.entries}
        assert "/organizations/discovery/v2.0/keys" in paths


# -- refused tokens --------------------------------------------------------------------------


class TestRefused:
    async def test_wrong_audience(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority)  # the Original API
        token = record(authority.mint_user_token("alice", audience="downstream"))
        exc = await refused(validator, token, InvalidAudienceError)
        assert exc.reason == "bad_audience"
        token = record(authority.mint_user_token("alice", audience_claim="api://someone-else"))
        assert (await refused(validator, token, InvalidAudienceError)).reason == "bad_audience"

    async def test_other_tenant_with_a_single_tenant_validator(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority)  # tenant=Contoso
        carol = record(authority.mint_user_token("carol"))
        assert claims_of(carol)["tid"] == FABRIKAM
        exc = await refused(validator, carol, InvalidIssuerError)
        assert exc.reason == "bad_issuer"

    async def test_other_tenant_not_on_the_allow_list_is_access_denied(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(
            authority, multi_tenant=True, allowed_tenants=frozenset({CONTOSO})
        )
        exc = await refused(
            validator, record(authority.mint_user_token("carol")), TenantNotAllowedError
        )
        assert exc.reason == "tenant_not_allowed"
        assert (await validator.validate(record(authority.mint_user_token("alice")))).tid == (
            CONTOSO
        )

    async def test_expired_and_not_yet_valid(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority, leeway=30)
        expired = record(authority.mint_user_token("alice", lifetime=-120))
        assert (await refused(validator, expired, ExpiredTokenError)).reason == "expired"
        iat = claims_of(expired)["iat"]
        future = record(authority.mint_user_token("alice", claims={"nbf": iat + 600}))
        assert (await refused(validator, future, NotYetValidError)).reason == "not_yet_valid"

    async def test_a_cached_token_is_refused_once_it_expires(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        clock = ShiftedClock()
        validator = make_validator(authority, clock=clock, leeway=0)
        token = record(authority.mint_user_token("alice", lifetime=600))
        await validator.validate(token)
        clock.advance(601)
        assert (await refused(validator, token, ExpiredTokenError)).reason == "expired"

    async def test_tampered_payload_and_foreign_signature(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority)
        good = record(authority.mint_user_token("alice"))
        await validator.validate(good)
        bob = authority.world.user("bob").oid
        for bad in (
            tampered(good, oid=bob),
            tampered(good, scp="access_as_user admin"),
            tampered(good, exp=claims_of(good)["exp"] + 3600),
        ):
            assert (await refused(validator, bad, InvalidSignatureError)).reason == "bad_signature"
        # The right kid, the wrong key: the signature part of another valid token.
        other = record(authority.mint_user_token("bob"))
        spliced = record(".".join([*good.split(".")[:2], other.split(".")[2]]))
        assert (await refused(validator, spliced, InvalidSignatureError)).reason == "bad_signature"

    async def test_a_token_from_another_authority_names_an_unknown_key(
        self,
        grpc_obo_authority: DevAuthority,
        grpc_obo_private_authority: DevAuthority,
        make_validator: MakeValidator,
    ) -> None:
        validator = make_validator(grpc_obo_authority)
        await validator.start()
        stranger = record(grpc_obo_private_authority.mint_user_token("alice"))
        assert (await refused(validator, stranger, UnknownKeyError)).reason == "unknown_key"

    async def test_graph_tokens(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        world = authority.world
        validator = make_validator(authority)
        # Shaped like a real Graph token: aud = Graph, v1, and a `nonce` in the header.
        graph = record(
            authority.minter.access_token(
                client=world.app("client"),
                resource=None,
                tenant_id=CONTOSO,
                user=world.user("alice"),
                scopes=["User.Read"],
            ).token
        )
        assert "nonce" in jwt.get_unverified_header(graph)
        assert (await refused(validator, graph, InvalidAudienceError)).reason == "graph_token"
        # Graph's audience without the header nonce: still refused by audience.
        for audience in ("00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com"):
            token = record(authority.mint_user_token("alice", audience_claim=audience))
            assert (await refused(validator, token, InvalidAudienceError)).reason == "graph_token"

    async def test_id_token_is_not_an_access_token(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        world = authority.world
        validator = make_validator(authority)
        id_token = record(
            authority.minter.id_token(
                user=world.user("alice"), client=world.app("original"), tenant_id=CONTOSO
            )
        )
        exc = await refused(validator, id_token, NotAnAccessTokenError)
        assert exc.reason == "not_access_token"

    async def test_version_and_client_allow_lists(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        v2_only = make_validator(authority, versions=frozenset({"2.0"}))
        v1 = record(authority.mint_user_token("alice", version=1))
        exc = await refused(v2_only, v1, InvalidClaimError)
        assert (exc.reason, exc.claim) == ("version_not_accepted", "ver")

        client_only = make_validator(
            authority,
            "downstream",
            allowed_client_ids=frozenset({authority.world.app("original").client_id}),
        )
        daemon = record(authority.mint_app_token("daemon"))
        assert (await refused(client_only, daemon, ClientNotAllowedError)).reason == (
            "client_not_allowed"
        )


# -- the unknown-kid flood -------------------------------------------------------------------


def frozen_clock() -> FakeClock:
    """The validator's clock, at the wall's now, moved only by the test.

    NOTE: not `ShiftedClock`: with wall time in it, the real seconds spent minting hundreds of
    tokens on a loaded machine count towards the refresh intervals, and a test that stops one
    second short of an interval sees the interval pass (`(1, 3) == (1, 2)`). Tokens are minted in
    real time; the seconds a test takes stay well inside the validator's leeway.
    """
    return FakeClock(time.time())


class TestRandomKidFlood:
    async def test_flood_after_warm_up_is_bounded_by_the_two_refresh_budgets(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        """A flood of made-up kids costs at most one fetch per `unknown_kid_refresh_interval` plus
        one per `new_kid_refresh_interval`; kids already looked up cost nothing more."""
        authority = grpc_obo_authority
        clock = frozen_clock()
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        validator = make_validator(
            authority,
            clock=clock,
            unknown_kid_refresh_interval=300,
            new_kid_refresh_interval=30,
            telemetry=grpc_obo.Telemetry(tracer_provider=provider),
        )
        good = record(authority.mint_user_token("alice"))
        await validator.validate(good)
        assert requests_to(authority) == (1, 1)

        def random_kids(count: int) -> list[str]:
            tokens = [with_kid(authority, good) for _ in range(count)]
            assert len({kid_of(t) for t in tokens}) == count
            return tokens

        async def flood(tokens: list[str]) -> None:
            fresh = [record(authority.mint_user_token("bob")) for _ in range(5)]
            results = await asyncio.gather(
                *(validator.validate(t) for t in [*tokens, *fresh]), return_exceptions=True
            )
            # The good tokens in the crowd still pass; every random kid is an unknown key.
            assert all(isinstance(r, grpc_obo.Identity) for r in results[len(tokens) :])
            for result in results[: len(tokens)]:
                assert isinstance(result, UnknownKeyError), result
                SEEN_TEXTS.append(repr(result))

        first = random_kids(300)
        await flood(first)
        assert requests_to(authority) == (1, 2)  # one refresh for the whole flood
        await flood(first)
        assert requests_to(authority) == (1, 2)  # kids looked up and missing: remembered

        second = random_kids(100)
        await flood(second)
        assert requests_to(authority) == (1, 3)  # never-seen kids: the short budget, once
        clock.advance(29)
        await flood(random_kids(100))
        assert requests_to(authority) == (1, 3)  # both budgets spent: no fetch at all

        clock.advance(1)
        third = random_kids(100)
        await flood(third)
        assert requests_to(authority) == (1, 4)  # the short budget again, 30 s on

        clock.advance(269)  # 299 s after the first flood
        for tokens in (first, second, third):
            await flood(tokens)
        assert requests_to(authority) == (1, 4)  # remembered kids wait for the long budget

        clock.advance(1)
        await flood(first)
        assert requests_to(authority) == (1, 5)  # the next interval: one more
        # The validator's own telemetry saw the same fetches (one span each, URL public).
        fetched = [
            span.attributes["url.full"]
            for span in spans.get_finished_spans()
            if span.name == "grpc_obo.keys.fetch" and span.attributes is not None
        ]
        discovery = validator.options.discovery_url
        assert (fetched.count(discovery), len(fetched) - fetched.count(discovery)) == (1, 5)

    async def test_cold_flood_shares_the_first_fetch(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority, clock=frozen_clock())
        good = record(authority.mint_user_token("alice"))
        tokens = [with_kid(authority, good) for _ in range(300)]
        results = await asyncio.gather(
            *(validator.validate(t) for t in [*tokens, good]), return_exceptions=True
        )
        assert all(isinstance(r, UnknownKeyError) for r in results[:-1])
        assert isinstance(results[-1], grpc_obo.Identity)
        # One fetch, shared by all 301 callers: the key set it brought is as fresh as any.
        assert requests_to(authority) == (1, 1)


# -- signing keys recover quickly ------------------------------------------------------------


class TestKeyRecovery:
    async def test_first_token_naming_an_unknown_key_costs_one_fetch(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        validator = make_validator(authority, clock=frozen_clock())
        junk = with_kid(authority, record(authority.mint_user_token("alice")))
        await refused(validator, junk, UnknownKeyError)
        # The first fetch was made for this very token: a second one could not know more.
        assert requests_to(authority) == (1, 1)

    async def test_a_junk_kid_does_not_hold_back_a_freshly_rolled_key(
        self, grpc_obo_private_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_private_authority
        clock = frozen_clock()
        validator = make_validator(authority, clock=clock)  # 300 s and 30 s budgets
        good = record(authority.mint_user_token("alice"))
        await validator.validate(good)
        junk = with_kid(authority, good)
        await refused(validator, junk, UnknownKeyError)
        assert requests_to(authority) == (1, 2)  # the junk kid spent the unknown-kid interval

        # A second later the authority rolls to a new key: its tokens pass at once.
        authority.keys.publish_next_key()
        new_kid = authority.keys.switch_signing_key()
        clock.advance(1)
        fresh = record(authority.mint_user_token("bob"))
        assert kid_of(fresh) == new_kid
        assert (await validator.validate(fresh)).oid == authority.world.user("bob").oid
        assert requests_to(authority) == (1, 3)

        # The junk kid again: remembered as missing, it costs nothing within the interval.
        clock.advance(60)
        await refused(validator, junk, UnknownKeyError)
        assert requests_to(authority) == (1, 3)

    async def test_never_loaded_keys_are_retried_after_a_short_backoff(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        """The authority blips while a replica starts: UNAVAILABLE for a second, not 300 s."""
        authority = grpc_obo_authority
        clock = frozen_clock()
        validator = make_validator(authority, clock=clock)
        token = record(authority.mint_user_token("alice"))
        authority.faults.jwks_down = True
        await refused(validator, token, KeySourceUnavailableError)
        assert requests_to(authority) == (1, 1)

        authority.faults.jwks_down = False
        await refused(validator, token, KeySourceUnavailableError)  # within the backoff
        assert requests_to(authority) == (1, 1)
        clock.advance(1)
        assert (await validator.validate(token)).oid == authority.world.user("alice").oid
        # Discovery again (a failed JWKS fetch forgets jwks_uri), then the JWKS.
        assert requests_to(authority) == (2, 2)

    async def test_backoff_doubles_up_to_its_cap_while_the_authority_stays_down(
        self, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
    ) -> None:
        authority = grpc_obo_authority
        clock = frozen_clock()
        validator = make_validator(
            authority, clock=clock, key_fetch_backoff_initial=1, key_fetch_backoff_max=8
        )
        authority.faults.jwks_down = True
        token = record(authority.mint_user_token("alice"))
        start = clock.now

        async def attempts_at(offset: float) -> int:
            clock.now = start + offset
            await refused(validator, token, KeySourceUnavailableError)
            return authority.requests.count(endpoint="jwks")

        # Failures at 0, 1, 3, 7, 15, 23, 31: waits of 1, 2, 4, 8, then 8 (the cap).
        timeline = [(0, 1), (0.9, 1), (1, 2), (2.9, 2), (3, 3), (6.9, 3), (7, 4), (14.9, 4)]
        timeline += [(15, 5), (22.9, 5), (23, 6), (30.9, 6), (31, 7)]
        assert [(t, await attempts_at(t)) for t, _ in timeline] == timeline

        # start() is an explicit request: it tries at once, whatever the backoff says.
        with pytest.raises(KeySourceUnavailableError):
            await validator.start()
        assert authority.requests.count(endpoint="jwks") == 8


# -- the authority goes down -----------------------------------------------------------------


async def _settle(validator: TokenValidator) -> None:
    """Let a background refresh the last validation started finish."""
    for _ in range(500):
        task = getattr(validator.key_source, "_refresh", None)
        if task is None or task.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a key refresh never finished")


@pytest.mark.parametrize("outage", ["jwks_down", "all_503"])
async def test_authority_down_cached_keys_keep_serving(
    grpc_obo_private_authority: DevAuthority,
    make_validator: MakeValidator,
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    authority = grpc_obo_private_authority
    clock = ShiftedClock()
    validator = make_validator(
        authority, clock=clock, key_refresh_interval=60, unknown_kid_refresh_interval=10
    )
    seen = record(authority.mint_user_token("alice"))
    await validator.validate(seen)
    assert requests_to(authority) == (1, 1)

    if outage == "jwks_down":
        authority.faults.jwks_down = True
    else:
        authority.faults.fail(503, endpoint="any", times=None)
    authority.requests.clear()

    # Already seen, and new tokens signed by the known key: all served from the cached keys.
    assert (await validator.validate(seen)).oid == authority.world.user("alice").oid
    for user in ("alice", "bob"):
        assert (await validator.validate(record(authority.mint_user_token(user)))).tid == CONTOSO
    assert authority.requests.entries == []  # nothing needed the authority

    # The scheduled refresh comes due and fails in the background; requests do not notice.
    clock.advance(61)
    fresh = [record(authority.mint_user_token("bob")) for _ in range(20)]
    results = await asyncio.gather(*(validator.validate(t) for t in fresh))
    assert {r.oid for r in results} == {authority.world.user("bob").oid}
    await _settle(validator)
    attempts = len(authority.requests.entries)
    assert 1 <= attempts <= 2  # one attempt: discovery (+ JWKS when only JWKS is down)
    assert all(e.status == 503 for e in authority.requests.entries)
    assert "keeping the last good key set" in caplog.text

    # The authority rolls to a key this validator never saw: tokens naming it fail as unknown
    # keys (there is a key set, just not that key), and the flood of them costs one attempt.
    authority.keys.publish_next_key()
    new_kid = authority.keys.switch_signing_key()
    clock.advance(10)
    unknown = [record(authority.mint_user_token("alice")) for _ in range(50)]
    assert {kid_of(t) for t in unknown} == {new_kid}
    before = len(authority.requests.entries)
    errors = await asyncio.gather(*(validator.validate(t) for t in unknown), return_exceptions=True)
    for error in errors:
        assert isinstance(error, UnknownKeyError), error
        assert error.reason == "unknown_key"
        SEEN_TEXTS.append(repr(error))
    await _settle(validator)
    assert len(authority.requests.entries) - before <= 2
    # The old key's tokens are still fine (the last good key set is kept).
    assert (await validator.validate(seen)).tid == CONTOSO

    # Within the interval nothing more is attempted.
    before = len(authority.requests.entries)
    await refused(validator, unknown[0], UnknownKeyError)
    assert len(authority.requests.entries) == before

    # The authority comes back: the next interval's refresh picks the new key up.
    authority.faults.clear()
    clock.advance(10)
    identity = await validator.validate(unknown[0])
    assert identity.oid == authority.world.user("alice").oid
    assert len(authority.requests.entries) - before <= 2


@pytest.mark.parametrize("outage", ["jwks_down", "all_503"])
async def test_never_fetched_and_authority_down_is_unavailable(
    grpc_obo_authority: DevAuthority, make_validator: MakeValidator, outage: str
) -> None:
    authority = grpc_obo_authority
    if outage == "jwks_down":
        authority.faults.jwks_down = True
    else:
        authority.faults.fail(503, endpoint="any", times=None)
    clock = frozen_clock()
    validator = make_validator(authority, clock=clock)
    with pytest.raises(KeySourceUnavailableError) as caught:
        await validator.start()
    SEEN_TEXTS.append(str(caught.value))
    after_start = len(authority.requests.entries)
    assert 1 <= after_start <= 2

    tokens = [record(authority.mint_user_token("alice")) for _ in range(50)]
    results = await asyncio.gather(*(validator.validate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, KeySourceUnavailableError) for r in results)
    # Within the backoff, no caller sends the down authority another request.
    assert len(authority.requests.entries) == after_start
    assert not isinstance(results[0], grpc_obo.TokenValidationError)  # not the caller's fault

    # After it, one shared attempt for the whole burst.
    clock.advance(1)
    results = await asyncio.gather(*(validator.validate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, KeySourceUnavailableError) for r in results)
    assert len(authority.requests.entries) == 2 * after_start
