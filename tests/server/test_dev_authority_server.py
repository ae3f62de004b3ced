"""The interceptor with a real `TokenValidator` fetching keys from the dev authority over HTTPS.

Statuses and challenges for good and bad dev-authority tokens on a real grpc.aio server, all four
RPC kinds, UNAVAILABLE when keys were never fetched, and a key rollover in the middle of steady
traffic that must not fail a single call.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from grpc_obo import Callers, MethodPolicy, Policy, TokenValidator
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.server.conftest import Serve
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

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INVALID_TOKEN = 'Bearer error="invalid_token"'
INSUFFICIENT = 'Bearer error="insufficient_scope"'

MakeValidator = Callable[..., TokenValidator]


@pytest.fixture(autouse=True)
def _no_dev_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # The conftest's check covers its own tokens; this one every dev-authority token, by segment.
    yield
    texts = [caplog.text, *(str(r.__dict__) for r in caplog.records)]
    assert not leaked(texts), "a dev-authority token reached a log record"


@pytest.fixture
async def make_validator() -> AsyncIterator[MakeValidator]:
    made: list[TokenValidator] = []

    def make(authority: DevAuthority, api: str = "original", **overrides: Any) -> TokenValidator:
        validator = TokenValidator(dev_options(authority, api, **overrides))
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.close()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def principal(authority: DevAuthority, user: str) -> str:
    found = authority.world.user(user)
    return f"{found.tenant_id}/{found.oid}"


def challenge(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == "www-authenticate":
            return str(value)
    return None


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    visible = [
        str(error.details()),
        str(error.trailing_metadata()),
        str(error.initial_metadata()),
        str(error.debug_error_string()),
        str(error),
        repr(error),
    ]
    assert not leaked(visible), "token text in what the client sees"
    return error


async def _requests(*texts: str) -> AsyncIterator[EchoRequest]:
    for text in texts:
        yield EchoRequest(text=text)


# Token factories: (authority) -> token, with the status the default policy answers.
CASES: list[tuple[str, Callable[[DevAuthority], str], grpc.StatusCode, str | None]] = [
    ("v2-user", lambda a: a.mint_user_token("alice"), OK, None),
    ("v1-user", lambda a: a.mint_user_token("bob", version=1), OK, None),
    (
        "app-token-on-a-user-method",
        lambda a: a.mint_app_token("daemon", audience="original", roles=["Echo.All"]),
        PERMISSION_DENIED,
        INSUFFICIENT,
    ),
    (
        "wrong-audience",
        lambda a: a.mint_user_token("alice", audience="downstream"),
        UNAUTHENTICATED,
        INVALID_TOKEN,
    ),
    ("other-tenant", lambda a: a.mint_user_token("carol"), UNAUTHENTICATED, INVALID_TOKEN),
    (
        "expired",
        lambda a: a.mint_user_token("alice", lifetime=-3600),
        UNAUTHENTICATED,
        INVALID_TOKEN,
    ),
    (
        "tampered",
        lambda a: tampered(a.mint_user_token("alice"), oid=a.world.user("bob").oid),
        UNAUTHENTICATED,
        INVALID_TOKEN,
    ),
    (
        "graph-audience",
        lambda a: a.mint_user_token("alice", audience_claim="https://graph.microsoft.com"),
        UNAUTHENTICATED,
        INVALID_TOKEN,
    ),
    (
        "unknown-kid",
        lambda a: with_kid(a, a.mint_user_token("alice")),
        UNAUTHENTICATED,
        INVALID_TOKEN,
    ),
]


@pytest.mark.parametrize(
    ("make_token", "code", "challenge_prefix"),
    [pytest.param(make, code, prefix, id=name) for name, make, code, prefix in CASES],
)
async def test_dev_authority_tokens_get_the_right_status(
    serve: Serve,
    grpc_obo_authority: DevAuthority,
    make_validator: MakeValidator,
    make_token: Callable[[DevAuthority], str],
    code: grpc.StatusCode,
    challenge_prefix: str | None,
) -> None:
    authority = grpc_obo_authority
    served = await serve(validator=make_validator(authority))
    token = record(make_token(authority))
    call = served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token), timeout=10)
    if code is OK:
        response = await call
        assert response.principal in {principal(authority, "alice"), principal(authority, "bob")}
        return
    error = await failure(call)
    assert error.code() is code
    assert (challenge(error) or "").startswith(challenge_prefix or "")


async def test_tenant_not_on_the_allow_list_is_permission_denied(
    serve: Serve, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
) -> None:
    authority = grpc_obo_authority
    validator = make_validator(authority, multi_tenant=True, allowed_tenants=frozenset({CONTOSO}))
    served = await serve(validator=validator)
    carol = record(authority.mint_user_token("carol"))
    error = await failure(served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(carol)))
    assert error.code() is PERMISSION_DENIED
    assert (challenge(error) or "").startswith(INSUFFICIENT)
    # Both tenants allowed: carol is served as herself (Fabrikam), alice as herself (Contoso).
    both = make_validator(authority, multi_tenant=True)
    served = await serve(validator=both)
    for user, tenant in (("carol", FABRIKAM), ("alice", CONTOSO)):
        token = record(authority.mint_user_token(user))
        response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token))
        assert response.principal == principal(authority, user)
        assert response.principal.startswith(tenant)


async def test_app_token_on_an_app_method(
    serve: Serve, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
) -> None:
    authority = grpc_obo_authority
    policy = Policy(
        default=MethodPolicy(callers=Callers.USERS_AND_APPS, app_roles=["Data.Read.All"])
    )
    served = await serve(validator=make_validator(authority, "downstream"), policy=policy)
    token = record(authority.mint_app_token("daemon", audience="downstream"))
    response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token))
    assert response.principal.startswith(f"{CONTOSO}/")


async def test_all_four_rpc_kinds(
    serve: Serve, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
) -> None:
    authority = grpc_obo_authority
    served = await serve(validator=make_validator(authority))
    alice = principal(authority, "alice")
    md = bearer(record(authority.mint_user_token("alice")))
    stub = served.stub

    assert (await stub.UnaryUnary(EchoRequest(text="u"), metadata=md)).principal == alice
    streamed = [r async for r in stub.UnaryStream(EchoRequest(text="s", count=3), metadata=md)]
    assert [r.principal for r in streamed] == [alice] * 3
    response = await stub.StreamUnary(_requests("a", "b"), metadata=md)
    assert (response.text, response.principal) == ("a+b", alice)
    echoed = [r async for r in stub.StreamStream(_requests("a", "b"), metadata=md)]
    assert [r.principal for r in echoed] == [alice] * 2

    expired = bearer(record(authority.mint_user_token("alice", lifetime=-3600)))
    calls: dict[str, Awaitable[Any]] = {
        "uu": stub.UnaryUnary(EchoRequest(text="u"), metadata=expired),
        "us": _drain(stub.UnaryStream(EchoRequest(text="s", count=2), metadata=expired)),
        "su": stub.StreamUnary(_requests("a"), metadata=expired),
        "ss": _drain(stub.StreamStream(_requests("a"), metadata=expired)),
    }
    for call in calls.values():
        assert (await failure(call)).code() is UNAUTHENTICATED


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def test_keys_never_fetched_and_authority_down_is_unavailable(
    serve: Serve, grpc_obo_authority: DevAuthority, make_validator: MakeValidator
) -> None:
    authority = grpc_obo_authority
    authority.faults.fail(503, endpoint="any", times=None)
    clock = ShiftedClock()
    validator = make_validator(authority, clock=clock, unknown_kid_refresh_interval=30)
    served = await serve(validator=validator)
    token = record(authority.mint_user_token("alice"))

    errors = await asyncio.gather(
        *(
            failure(served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token)))
            for _ in range(20)
        )
    )
    assert {e.code() for e in errors} == {UNAVAILABLE}
    assert all(challenge(e) is None for e in errors)  # not the token's fault: no challenge
    assert authority.requests.count() == 1  # one shared attempt for the 20 calls

    # The authority is back: after the retry interval the next call fetches and succeeds.
    authority.faults.clear()
    clock.advance(30)
    response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token))
    assert response.principal == principal(authority, "alice")


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.slow
async def test_key_rotation_mid_traffic_fails_no_call(
    serve: Serve, grpc_obo_private_authority: DevAuthority, make_validator: MakeValidator
) -> None:
    authority = grpc_obo_private_authority
    clock = ShiftedClock()
    validator = make_validator(
        authority, clock=clock, key_refresh_interval=60, unknown_kid_refresh_interval=30
    )
    await validator.start()
    served = await serve(validator=validator)
    expected = {user: principal(authority, user) for user in ("alice", "bob")}

    ok_by_kid: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        user = ("alice", "bob")[n % 2]
        while not stop.is_set():
            token = record(authority.mint_user_token(user))
            kid = kid_of(token)
            try:
                response = await served.stub.UnaryUnary(
                    EchoRequest(text=str(n)), metadata=bearer(token), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{kid}: {exc.code().name} {exc.details()}")
                continue
            if response.principal != expected[user]:
                failures.append(f"{kid}: saw {response.principal}")
            ok_by_kid[kid] += 1

    def jwks_ok() -> int:
        return authority.requests.count(endpoint="jwks", ok=True)

    def refresh_idle() -> bool:
        task = getattr(validator.key_source, "_refresh", None)
        return task is None or task.done()

    first_kid = authority.keys.signing_key.kid
    old_token = record(authority.mint_user_token("alice"))
    cached = await served.stub.UnaryUnary(EchoRequest(text="old"), metadata=bearer(old_token))
    assert cached.principal == expected["alice"]
    clients = [asyncio.create_task(client(n)) for n in range(8)]
    try:
        await _until(lambda: ok_by_kid[first_kid] >= 100, "traffic on the first key")

        # Entra's rollover: publish the next key ahead of use; the scheduled refresh fetches it.
        second_kid = authority.keys.publish_next_key()
        clock.advance(61)
        await _until(lambda: jwks_ok() >= 2 and refresh_idle(), "the scheduled refresh")
        assert authority.keys.switch_signing_key(second_kid) == second_kid
        await _until(lambda: ok_by_kid[second_kid] >= 100, "traffic on the second key")
        assert authority.keys.retire_key(first_kid) == first_kid
        clock.advance(61)
        await _until(lambda: jwks_ok() >= 3 and refresh_idle(), "the refresh after retiring")
        done = sum(ok_by_kid.values())
        await _until(lambda: sum(ok_by_kid.values()) >= done + 100, "traffic after retiring")

        # An abrupt one: published and signing at once; the first unknown kid refreshes (once).
        third_kid = authority.keys.publish_next_key()
        authority.keys.switch_signing_key(third_kid)
        await _until(lambda: ok_by_kid[third_kid] >= 100, "traffic on the third key")
        authority.keys.retire_key(second_kid)
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert failures == [], f"{len(failures)} failed calls, e.g. {failures[:3]}"
    assert min(ok_by_kid[k] for k in (first_kid, second_kid, third_kid)) >= 100
    # Initial fetch, two scheduled refreshes, one unknown-kid refresh; discovery once.
    assert authority.requests.count(endpoint="jwks") == 4
    assert authority.requests.count(endpoint="discovery") == 1

    # The retired key's tokens are refused now, even one that was verified (and cached) before.
    error = await failure(
        served.stub.UnaryUnary(EchoRequest(text="old"), metadata=bearer(old_token))
    )
    assert error.code() is UNAUTHENTICATED
    assert (challenge(error) or "").startswith(INVALID_TOKEN)
