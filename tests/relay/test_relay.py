"""Trouble at the second hop reaches the client app: a middle tier whose handler calls downstream
through an On-Behalf-Of channel and does not catch the failure ends the incoming call with the
downstream's status and `www-authenticate` challenge (claims intact), never UNKNOWN, never the
downstream's details or address. All four RPC kinds, real servers, real dev authority and MSAL.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

import grpc_obo
from examples.settings import Settings
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2_grpc
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest, EchoResponse

# A CAE challenge (an `nbf` the middle tier's next exchange can meet). Not `acrs`: an
# authentication context is met only by the user's sign-in (tests/http/test_step_up.py).
CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
CAE_CHALLENGE = (
    'Bearer error="insufficient_claims", error_description="step up", '
    f'claims="{base64.b64encode(CLAIMS.encode()).decode()}"'
)
DENIED_CHALLENGE = 'Bearer error="insufficient_scope", error_description="not yours", scope="x"'
# What the client app gets for them: rebuilt, with fixed descriptions (grpc_obo._relay).
CAE_RELAYED = (
    'Bearer error="insufficient_claims", error_description="a downstream API needs more claims: '
    'sign in again with the claims in this challenge", '
    f'claims="{base64.b64encode(CLAIMS.encode()).decode()}"'
)
DENIED_RELAYED = (
    'Bearer error="insufficient_scope", '
    "error_description=\"a downstream API needs a permission the user's token lacks "
    '(a scope, or consent to it)", scope="x"'
)
# What a chatty or compromised downstream writes: inner host names and a JWT-shaped string.
LEAK = "db1.internal.contoso.example:5432 eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
EVIL_CHALLENGE = (
    'Bearer realm="", authorization_uri="https://evil.example/login", '
    f'error="insufficient_claims", error_description="{LEAK}", '
    f'claims="{base64.b64encode(CLAIMS.encode()).decode()}"'
)
FAST_RETRY = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=2.0)


def _principal() -> str:
    identity = grpc_obo.current_identity()
    return identity.principal if identity is not None else ""


async def _misbehave(text: str, context: Any) -> None:
    """The downstream's own refusals, chosen by the request text."""
    if text == "cae":  # a CAE-enabled API asking for a step-up
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "cae", (("www-authenticate", CAE_CHALLENGE),)
        )
    if text == "deny":
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, "deny", (("www-authenticate", DENIED_CHALLENGE),)
        )
    if text.startswith("code:"):  # any status, with details naming inner hosts
        await context.abort(grpc.StatusCode[text.removeprefix("code:")], LEAK)
    if text == "raise":  # a downstream bug: grpc makes it UNKNOWN with the exception's text
        raise ValueError(LEAK)
    if text == "nonascii":  # grpc refuses to send it: the downstream's call ends INTERNAL
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, LEAK, (("www-authenticate", 'Bearer error="é"'),)
        )
    if text == "two":  # RFC 7235 allows several challenges: a plain one first, claims second
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            LEAK,
            (
                ("www-authenticate", 'Bearer realm="", error="invalid_token"'),
                ("www-authenticate", CAE_CHALLENGE),
            ),
        )
    if text == "evil":
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, LEAK, (("www-authenticate", EVIL_CHALLENGE),)
        )


class Downstream(echo_pb2_grpc.EchoServicer):
    async def UnaryUnary(self, request, context):
        await _misbehave(request.text, context)
        return EchoResponse(text=request.text, principal=_principal())

    async def UnaryStream(self, request, context):
        await _misbehave(request.text, context)
        yield EchoResponse(text=request.text, principal=_principal())

    async def StreamUnary(self, request_iterator, context):
        async for request in request_iterator:
            await _misbehave(request.text, context)
        return EchoResponse(text="done", principal=_principal())

    async def StreamStream(self, request_iterator, context):
        async for request in request_iterator:
            await _misbehave(request.text, context)
            yield EchoResponse(text=request.text, principal=_principal())


async def _one(text: str) -> AsyncIterator[EchoRequest]:
    yield EchoRequest(text=text)


class Middle(echo_pb2_grpc.EchoServicer):
    """Calls downstream with the same RPC kind; "catch:" requests handle the failure themselves,
    "plain:" requests use a channel without On-Behalf-Of (its errors are not relayed), "app:"
    requests the app-only channel (the service's own token), "wrap:" requests raise a
    RuntimeError quoting the downstream's error instead, "after:" requests catch it and then
    raise one, outside the `except` block."""

    def __init__(
        self,
        obo: echo_pb2_grpc.EchoStub,
        plain: echo_pb2_grpc.EchoStub,
        app: echo_pb2_grpc.EchoStub | None = None,
    ) -> None:
        self._obo, self._plain, self._app = obo, plain, app

    def _route(self, text: str) -> tuple[echo_pb2_grpc.EchoStub, str, bool]:
        if text.startswith("plain:"):
            return self._plain, text.removeprefix("plain:"), False
        if text.startswith("app:") and self._app is not None:
            return self._app, text.removeprefix("app:"), False
        if text.startswith("catch:"):
            return self._obo, text.removeprefix("catch:"), True
        return self._obo, text, False

    async def UnaryUnary(self, request, context):
        if request.text.startswith("wrap:"):
            try:
                return await self._obo.UnaryUnary(
                    EchoRequest(text=request.text.removeprefix("wrap:")), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                raise RuntimeError(f"downstream said {error.details()}") from None
        if request.text.startswith("after:"):
            said = ""
            try:
                await self._obo.UnaryUnary(
                    EchoRequest(text=request.text.removeprefix("after:")), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                said = str(error.details())
            raise RuntimeError(f"could not finish: {said}")
        stub, text, catch = self._route(request.text)
        try:
            return await stub.UnaryUnary(EchoRequest(text=text), timeout=5)
        except grpc.aio.AioRpcError as error:
            if not catch:
                raise
            return EchoResponse(text=f"handled {error.code().name}")

    async def UnaryStream(self, request, context):
        stub, text, _ = self._route(request.text)
        async for item in stub.UnaryStream(EchoRequest(text=text), timeout=5):
            yield item

    async def StreamUnary(self, request_iterator, context):
        texts = [r.text async for r in request_iterator]
        stub, text, _ = self._route(texts[0])
        return await stub.StreamUnary(_one(text), timeout=5)

    async def StreamStream(self, request_iterator, context):
        texts = [r.text async for r in request_iterator]
        stub, text, _ = self._route(texts[0])
        async for item in stub.StreamStream(_one(text), timeout=5):
            yield item


@dataclass
class Hops:
    authority: DevAuthority
    settings: Settings
    middle: echo_pb2_grpc.EchoStub
    obo: grpc_obo.OnBehalfOf

    def token(self, user: str = "alice") -> str:
        return self.authority.mint_user_token(
            user, audience="original", client="client", scopes=["access_as_user"]
        )


async def _serve(
    stack: contextlib.AsyncExitStack,
    validator: grpc_obo.TokenValidator,
    servicer: Any,
    policy: grpc_obo.Policy | None = None,
) -> str:
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(validator, policy=policy)])
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stack.push_async_callback(server.stop, 1.0)
    return f"127.0.0.1:{port}"


@pytest.fixture
async def hops(grpc_obo_authority: DevAuthority) -> AsyncIterator[Hops]:
    settings = Settings(grpc_obo_authority.summary())
    async with contextlib.AsyncExitStack() as stack:
        down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
        mid_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
        obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST_RETRY)
        app = grpc_obo.AppOnly(settings.confidential_client("daemon"), retry=FAST_RETRY)
        for closer in (down_validator, mid_validator, obo, app):
            stack.push_async_callback(closer.close)
        # Users, and apps as themselves (the middle tier's app-only channel).
        either = grpc_obo.Policy(
            default=grpc_obo.MethodPolicy(
                callers=grpc_obo.Callers.USERS_AND_APPS, app_roles={"Data.Read.All"}
            )
        )
        downstream = await _serve(stack, down_validator, Downstream(), either)
        obo_channel = obo.channel(downstream, scopes=[settings.scope("downstream", "Data.Read")])
        app_channel = app.channel(
            downstream, scopes=[f"{settings.app('downstream')['app_id_uri']}/.default"]
        )
        plain_channel = grpc.aio.insecure_channel(downstream)
        middle_address = await _serve(
            stack,
            mid_validator,
            Middle(
                echo_pb2_grpc.EchoStub(obo_channel),
                echo_pb2_grpc.EchoStub(plain_channel),
                echo_pb2_grpc.EchoStub(app_channel),
            ),
        )
        client_channel = grpc.aio.insecure_channel(middle_address)
        for channel in (obo_channel, app_channel, plain_channel, client_channel):
            stack.push_async_callback(channel.close)
        yield Hops(grpc_obo_authority, settings, echo_pb2_grpc.EchoStub(client_channel), obo)


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


def _call(stub: echo_pb2_grpc.EchoStub, kind: str, text: str, token: str) -> Awaitable[Any]:
    md = (("authorization", f"Bearer {token}"),)
    if kind == "unary_unary":
        return stub.UnaryUnary(EchoRequest(text=text), metadata=md, timeout=10)  # type: ignore[no-any-return]
    if kind == "unary_stream":
        return _drain(stub.UnaryStream(EchoRequest(text=text), metadata=md, timeout=10))
    if kind == "stream_unary":
        return stub.StreamUnary(_one(text), metadata=md, timeout=10)  # type: ignore[no-any-return]
    return _drain(stub.StreamStream(_one(text), metadata=md, timeout=10))


async def _failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _challenge(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == "www-authenticate":
            return str(value)
    return None


def _clean(error: grpc.aio.AioRpcError) -> None:
    """What reaches the client names no inner host and carries no token or nested text."""
    shown = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()}"
    # A claims value is base64 JSON ("eyJ..." too): everything else must hold no JWT.
    shown = re.sub(r'claims="[^"]*"', "claims=...", shown)
    assert "127.0.0.1" not in shown and "ipv4:" not in shown, shown
    assert "eyJ" not in shown, shown
    assert "Unexpected" not in shown and "AioRpcError" not in shown, shown
    assert "internal.contoso" not in shown and "evil.example" not in shown, shown


KIND_NAMES = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class TestRelayedFromTheDownstream:
    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_downstream_claims_challenge_reaches_the_client_intact(
        self, hops: Hops, kind: str
    ) -> None:
        error = await _failure(_call(hops.middle, kind, "cae", hops.token()))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (kind, error.details())
        assert _challenge(error) == CAE_RELAYED
        _clean(error)

    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_downstream_denial_is_permission_denied_with_its_challenge(
        self, hops: Hops, kind: str
    ) -> None:
        error = await _failure(_call(hops.middle, kind, "deny", hops.token()))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (kind, error.details())
        assert _challenge(error) == DENIED_RELAYED
        _clean(error)

    async def test_the_claims_of_a_downstream_challenge_go_into_the_next_exchange(
        self, hops: Hops
    ) -> None:
        token = hops.token()
        await hops.middle.UnaryUnary(
            EchoRequest(text="ok"), metadata=(("authorization", f"Bearer {token}"),)
        )
        before = hops.authority.requests.count(grant="obo", user="alice")
        await _failure(_call(hops.middle, "unary_unary", "cae", token))
        # The rejected token was evicted: the next call exchanges again, asking for the claims.
        response = await hops.middle.UnaryUnary(
            EchoRequest(text="ok"), metadata=(("authorization", f"Bearer {token}"),)
        )
        assert response.principal
        assert hops.authority.requests.count(grant="obo", user="alice") == before + 1
        # ... and that exchange asked for the challenge's claims: its token is cached under
        # the key that includes them.
        async with grpc_obo.TokenValidator(hops.settings.validator_options("original")) as v:
            alice = await v.validate(token)
        scopes = [hops.settings.scope("downstream", "Data.Read")]
        with_claims = hops.obo.cache_key(scopes, identity=alice, claims=CLAIMS)
        assert await hops.obo.cache.get(with_claims) is not None
        assert await hops.obo.cache.get(hops.obo.cache_key(scopes, identity=alice)) is None

    async def test_a_handler_that_catches_the_failure_keeps_its_own_answer(
        self, hops: Hops
    ) -> None:
        md = (("authorization", f"Bearer {hops.token()}"),)
        response = await hops.middle.UnaryUnary(EchoRequest(text="catch:cae"), metadata=md)
        assert response.text == "handled UNAUTHENTICATED"

    async def test_a_failure_on_a_channel_without_on_behalf_of_is_not_relayed(
        self, hops: Hops
    ) -> None:
        md = (("authorization", f"Bearer {hops.token()}"),)
        error = await _failure(hops.middle.UnaryUnary(EchoRequest(text="plain:ok"), metadata=md))
        # The plain channel carried no token: the downstream refused, the handler did not
        # catch it, and grpc reports the handler's own failure. Not ours to relay.
        assert error.code() is grpc.StatusCode.UNKNOWN


class TestAppOnlyChannels:
    """An app-only channel carries the service's own token: its failures are relayed in fixed
    words like an On-Behalf-Of channel's (the downstream's text never reaches the caller), but a
    refusal of the service's own credentials is never handed to the caller as theirs: no
    challenge (the user cannot meet it by signing in again), no UNAUTHENTICATED or
    PERMISSION_DENIED, only INTERNAL, an operator's problem."""

    @pytest.mark.parametrize("kind", KIND_NAMES)
    @pytest.mark.parametrize("text", ["cae", "deny"])
    async def test_a_refusal_of_the_services_own_token_is_internal_without_a_challenge(
        self, hops: Hops, kind: str, text: str
    ) -> None:
        error = await _failure(_call(hops.middle, kind, f"app:{text}", hops.token()))
        assert error.code() is grpc.StatusCode.INTERNAL, (kind, error.code(), error.details())
        assert _challenge(error) is None
        assert error.details() == "a downstream API refused this service's own credentials"
        _clean(error)

    async def test_its_other_failures_are_relayed_in_fixed_words(self, hops: Hops) -> None:
        md = (("authorization", f"Bearer {hops.token()}"),)
        error = await _failure(
            hops.middle.UnaryUnary(EchoRequest(text="app:code:NOT_FOUND"), metadata=md)
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()
        assert error.details() == "a downstream API did not find what was asked for"
        _clean(error)

    async def test_an_app_only_claims_challenge_is_not_the_users(self, hops: Hops) -> None:
        """The user's next On-Behalf-Of exchange carries no claims an app-only call was told of."""
        token = hops.token()
        md = (("authorization", f"Bearer {token}"),)
        await _failure(hops.middle.UnaryUnary(EchoRequest(text="app:cae"), metadata=md))
        await hops.middle.UnaryUnary(EchoRequest(text="ok"), metadata=md)
        async with grpc_obo.TokenValidator(hops.settings.validator_options("original")) as v:
            alice = await v.validate(token)
        scopes = [hops.settings.scope("downstream", "Data.Read")]
        assert await hops.obo.cache.get(hops.obo.cache_key(scopes, identity=alice)) is not None


class TestRelayedFromTheExchange:
    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_claims_challenge_at_the_exchange_reaches_the_client(
        self, hops: Hops, kind: str
    ) -> None:
        downstream_id = hops.settings.app("downstream")["client_id"]
        hops.authority.faults.require_claims("alice", resource_client_id=downstream_id)
        error = await _failure(_call(hops.middle, kind, "ok", hops.token()))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (kind, error.details())
        challenge = _challenge(error) or ""
        assert 'error="insufficient_claims"' in challenge and 'claims="' in challenge
        _clean(error)

    async def test_a_missing_consent_is_permission_denied_naming_the_api(
        self, hops: Hops, caplog: pytest.LogCaptureFixture
    ) -> None:
        original = hops.authority.world.app("original")
        downstream_id = hops.settings.app("downstream")["client_id"]
        saved = dict(original.api_permissions)
        original.api_permissions.pop(downstream_id, None)
        try:
            error = await _failure(_call(hops.middle, "unary_unary", "ok", hops.token()))
        finally:
            original.api_permissions.clear()
            original.api_permissions.update(saved)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
        scope = hops.settings.scope("downstream", "Data.Read")
        assert scope in error.details()
        assert 'error="insufficient_scope"' in (_challenge(error) or "")
        _clean(error)
        # Not the user's fault: one WARNING at the middle tier with Entra's code, no token.
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len([w for w in warned if "65001" in w and "correlation_id=" in w]) == 1, warned
        assert not [w for w in warned if "eyJ" in w]


class TestUnreachable:
    async def test_an_unreachable_downstream_is_unavailable_within_the_deadline(
        self, grpc_obo_authority: DevAuthority
    ) -> None:
        settings = Settings(grpc_obo_authority.summary())
        async with contextlib.AsyncExitStack() as stack:
            validator = grpc_obo.TokenValidator(settings.validator_options("original"))
            obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST_RETRY)
            stack.push_async_callback(validator.close)
            stack.push_async_callback(obo.close)
            # A port nothing listens on: bind one, close it.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                dead = f"127.0.0.1:{probe.getsockname()[1]}"
            obo_channel = obo.channel(dead, scopes=[settings.scope("downstream", "Data.Read")])
            stack.push_async_callback(obo_channel.close)
            middle = await _serve(
                stack,
                validator,
                Middle(echo_pb2_grpc.EchoStub(obo_channel), echo_pb2_grpc.EchoStub(obo_channel)),
            )
            channel = grpc.aio.insecure_channel(middle)
            stack.push_async_callback(channel.close)
            token = grpc_obo_authority.mint_user_token(
                "alice", audience="original", client="client", scopes=["access_as_user"]
            )
            stub = echo_pb2_grpc.EchoStub(channel)
            error = await _failure(
                stub.UnaryUnary(
                    EchoRequest(text="ok"),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=8,
                )
            )
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
            _clean(error)
