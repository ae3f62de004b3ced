"""The grpc.aio server interceptor on a real server: statuses, challenges, identity, RPC kinds."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import grpc.aio
import pytest

from grpc_obo import (
    ConfigurationError,
    MethodPolicy,
    Policy,
    Telemetry,
    TokenExchangeError,
    TokenValidator,
    current_identity,
    server_interceptor,
)
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.server.conftest import Serve, leaks, static_options
from tests.server.echo import ABORT_DETAILS, AsyncEcho, DecoratedEcho, SyncEcho, WriterEcho
from tests.server.tokens import app_token, bearer, forged_token, principal, user_token

ECHO = "grpc_obo.testing.v1.Echo"
UNARY = f"/{ECHO}/UnaryUnary"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


async def requests(*texts: str) -> AsyncIterator[EchoRequest]:
    for text in texts:
        yield EchoRequest(text=text)


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    # Whatever the failure, no token text in what the client sees.
    visible = f"{error.details()} {error.trailing_metadata()} {error!s} {error!r}"
    assert not leaks(visible)
    return error


def challenge(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == "www-authenticate":
            return str(value)
    return None


class TestStatusMapping:
    async def test_missing_token_is_unauthenticated_with_a_bare_challenge(
        self, serve: Serve
    ) -> None:
        served = await serve()
        error = await failure(served.stub.UnaryUnary(EchoRequest(text="x")))
        assert error.code() is UNAUTHENTICATED
        assert challenge(error) == "Bearer"

    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda: forged_token(1), id="bad-signature"),
            pytest.param(lambda: user_token(1, lifetime=-3600), id="expired"),
            pytest.param(lambda: "not-a-jwt-at-all", id="garbage"),
        ],
    )
    async def test_invalid_tokens_are_unauthenticated_with_invalid_token(
        self, serve: Serve, make: Any
    ) -> None:
        served = await serve()
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(make()))
        )
        assert error.code() is UNAUTHENTICATED
        assert (challenge(error) or "").startswith(
            'Bearer error="invalid_token", error_description='
        )

    async def test_missing_scope_is_permission_denied_with_the_scope(self, serve: Serve) -> None:
        served = await serve(policy=Policy(methods={UNARY: MethodPolicy(scopes=["Echo.Write"])}))
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(user_token(1)))
        )
        assert error.code() is PERMISSION_DENIED
        assert 'error="insufficient_scope"' in (challenge(error) or "")
        assert 'scope="Echo.Write"' in (challenge(error) or "")

    async def test_app_token_on_a_user_method_is_permission_denied(self, serve: Serve) -> None:
        served = await serve(policy=Policy(methods={UNARY: MethodPolicy(scopes=["Echo.Read"])}))
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(app_token()))
        )
        assert error.code() is PERMISSION_DENIED
        assert 'error="insufficient_scope"' in (challenge(error) or "")
        assert 'scope="Echo.Read"' in (challenge(error) or "")

    async def test_key_source_unavailable_is_unavailable(self, serve: Serve) -> None:
        # Discovery on a loopback port where nothing listens: no keys can be fetched.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        options = static_options(
            jwks=None,
            authority_host=f"http://127.0.0.1:{port}",
            allow_loopback_http=True,
            http_timeout=2.0,
        )
        async with TokenValidator(options) as unavailable:
            served = await serve(validator=unavailable)
            error = await failure(
                served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(user_token(1)))
            )
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert challenge(error) is None

    async def test_unexpected_validator_error_is_internal_and_logged_without_the_token(
        self, serve: Serve, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Exploding:
            async def validate(self, token: str) -> Any:
                raise RuntimeError(f"bug while reading {token} / {token.split('.')[1]}")

            def cached(self, token: str) -> None:
                return None

        served = await serve(validator=Exploding())
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(user_token(1)))
        )
        assert error.code() is grpc.StatusCode.INTERNAL
        assert error.details() == "token validation failed"
        assert "RuntimeError" in caplog.text and "[redacted]" in caplog.text


class TestAuthorizationMetadata:
    @pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
    async def test_scheme_is_case_insensitive(self, serve: Serve, scheme: str) -> None:
        served = await serve()
        metadata = (("authorization", f"{scheme} {user_token(3)}"),)
        response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=metadata)
        assert response.principal == principal(3)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("Basic dXNlcjpwYXNz", "Bearer", id="other-scheme"),
            pytest.param("Bearer", 'Bearer error="invalid_token"', id="no-token"),
            pytest.param("Bearer ", 'Bearer error="invalid_token"', id="empty-token"),
            pytest.param("Bearer    ", 'Bearer error="invalid_token"', id="blank-token"),
            pytest.param("Bearer a b", 'Bearer error="invalid_token"', id="inner-space"),
            pytest.param("Bearertoken", "Bearer", id="no-separator"),
        ],
    )
    async def test_unusable_authorization_is_unauthenticated(
        self, serve: Serve, value: str, expected: str
    ) -> None:
        served = await serve()
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=(("authorization", value),))
        )
        assert error.code() is UNAUTHENTICATED
        assert (challenge(error) or "").startswith(expected)

    async def test_token_with_whitespace_inside_is_refused(self, serve: Serve) -> None:
        served = await serve()
        token = user_token(1)
        head, rest = token.split(".", 1)
        metadata = (("authorization", f"Bearer {head}. {rest}"),)
        error = await failure(served.stub.UnaryUnary(EchoRequest(text="x"), metadata=metadata))
        assert error.code() is UNAUTHENTICATED

    async def test_more_than_one_authorization_value_is_refused(self, serve: Serve) -> None:
        served = await serve()
        good = user_token(1)
        metadata = (("authorization", f"Bearer {good}"), ("authorization", f"Bearer {good}"))
        error = await failure(served.stub.UnaryUnary(EchoRequest(text="x"), metadata=metadata))
        assert error.code() is UNAUTHENTICATED
        assert error.details() == "more than one authorization value"


class TestPublicMethods:
    async def test_health_is_public_without_a_token(self, serve: Serve) -> None:
        served = await serve()
        assert await served.health() == b"\x08\x01"

    async def test_a_token_on_a_public_method_is_ignored_even_when_bad(self, serve: Serve) -> None:
        served = await serve(policy=Policy(public=[UNARY]))
        for metadata in (
            (),
            bearer(forged_token(1)),
            bearer(user_token(1)),
            (("authorization", "x"),),
        ):
            response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=metadata)
            assert response.principal == ""  # public methods run with no identity
        assert await served.health(bearer(user_token(2, lifetime=-3600))) == b"\x08\x01"

    async def test_health_can_be_protected(self, serve: Serve) -> None:
        served = await serve(policy=Policy(builtin_public=False))
        error = await failure(served.health())
        assert error.code() is UNAUTHENTICATED

    async def test_strict_mode_denies_unnamed_methods(self, serve: Serve) -> None:
        served = await serve(policy=Policy(strict=True, methods={UNARY: MethodPolicy()}))
        token = user_token(1)
        assert (await served.stub.UnaryUnary(EchoRequest(), metadata=bearer(token))).principal
        error = await failure(served.stub.StreamUnary(requests("a"), metadata=bearer(token)))
        assert error.code() is PERMISSION_DENIED
        error = await failure(served.stub.StreamUnary(requests("a")))
        assert error.code() is UNAUTHENTICATED  # no token: authentication comes first
        assert await served.health() == b"\x08\x01"


class TestDecorator:
    async def test_declared_scope_is_enforced(self, serve: Serve) -> None:
        served = await serve(servicer=DecoratedEcho())
        error = await failure(
            served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(user_token(1)))
        )
        assert error.code() is PERMISSION_DENIED
        assert 'scope="Echo.Write"' in (challenge(error) or "")
        response = await served.stub.UnaryUnary(
            EchoRequest(text="x"), metadata=bearer(user_token(2, scopes="Echo.Write"))
        )
        assert response.principal == principal(2)

    async def test_declared_public_method(self, serve: Serve) -> None:
        served = await serve(servicer=DecoratedEcho(), policy=Policy(strict=True))
        responses = [r async for r in served.stub.UnaryStream(EchoRequest(text="x"))]
        assert [r.principal for r in responses] == [""]

    async def test_declared_apps_only(self, serve: Serve) -> None:
        served = await serve(servicer=DecoratedEcho())
        response = await served.stub.StreamUnary(requests("a"), metadata=bearer(app_token()))
        assert response.text == "a"
        error = await failure(
            served.stub.StreamUnary(requests("a"), metadata=bearer(user_token(1)))
        )
        assert error.code() is PERMISSION_DENIED


SERVICERS = [
    pytest.param(AsyncEcho, id="async-generators"),
    pytest.param(WriterEcho, id="context-write"),
    pytest.param(SyncEcho, id="sync-thread-pool"),
]


@pytest.mark.parametrize("servicer", SERVICERS)
class TestAllRpcKinds:
    async def test_every_kind_sees_its_identity(self, serve: Serve, servicer: type) -> None:
        served = await serve(servicer=servicer())
        md = bearer(user_token(7))
        me = principal(7)
        assert (await served.stub.UnaryUnary(EchoRequest(text="u"), metadata=md)).principal == me
        stream = served.stub.UnaryStream(EchoRequest(text="s", count=3), metadata=md)
        assert [r.principal async for r in stream] == [me] * 3
        response = await served.stub.StreamUnary(requests("a", "b", "c"), metadata=md)
        assert (response.text, response.principal) == ("a+b+c", me)
        both = served.stub.StreamStream(requests("a", "b"), metadata=md)
        assert [(r.text, r.principal) async for r in both] == [("a", me), ("b", me)]

    async def test_every_kind_refuses_without_a_token(self, serve: Serve, servicer: type) -> None:
        served = await serve(servicer=servicer())
        for call in (
            served.stub.UnaryUnary(EchoRequest(text="u")),
            served.stub.StreamUnary(requests("a")),
        ):
            assert (await failure(call)).code() is UNAUTHENTICATED
        for stream in (
            served.stub.UnaryStream(EchoRequest(text="s", count=2)),
            served.stub.StreamStream(requests("a")),
        ):
            assert (await failure(_drain(stream))).code() is UNAUTHENTICATED

    async def test_handler_abort_is_not_swallowed(
        self, serve: Serve, servicer: type, caplog: pytest.LogCaptureFixture
    ) -> None:
        served = await serve(servicer=servicer())
        md = bearer(user_token(1))
        calls = [
            lambda: served.stub.UnaryUnary(EchoRequest(text="abort"), metadata=md, timeout=5),
            lambda: served.stub.StreamUnary(requests("a", "abort"), metadata=md, timeout=5),
        ]
        if servicer is not SyncEcho:
            # NOTE: not for sync generators: grpc.aio itself sometimes hangs a sync streaming
            # handler that aborts mid-stream (reproduced with no interceptor at all).
            calls += [
                lambda: _drain(
                    served.stub.UnaryStream(
                        EchoRequest(text="abort", count=3), metadata=md, timeout=5
                    )
                ),
                lambda: _drain(
                    served.stub.StreamStream(requests("a", "abort"), metadata=md, timeout=5)
                ),
            ]
        for make in calls:
            call = make()
            error = await failure(call)
            assert (error.code(), error.details()) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                ABORT_DETAILS,
            )
        assert "suppressed" not in caplog.text

    async def test_public_method_of_every_kind_has_no_identity(
        self, serve: Serve, servicer: type
    ) -> None:
        served = await serve(servicer=servicer(), policy=Policy(public=[ECHO]))
        assert (await served.stub.UnaryUnary(EchoRequest(text="u"))).principal == ""
        stream = served.stub.UnaryStream(EchoRequest(text="s", count=2))
        assert [r.principal async for r in stream] == ["", ""]
        assert (await served.stub.StreamUnary(requests("a"))).principal == ""
        assert [r.principal async for r in served.stub.StreamStream(requests("a"))] == [""]


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


class _Probe(grpc.aio.ServerInterceptor):
    """Runs outside the auth interceptor and records the identity around the wrapped handler."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                self.seen.append(("before", current_identity()))
                try:
                    return await inner(request, context)
                finally:
                    self.seen.append(("after", current_identity()))

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: Any) -> Any:
            self.seen.append(("before", current_identity()))
            async for item in inner_stream(request, context):
                self.seen.append(("between", current_identity()))
                yield item
            self.seen.append(("after", current_identity()))

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )


class TestIdentityLifetime:
    async def test_identity_is_set_only_inside_the_handler(self, serve: Serve) -> None:
        probe = _Probe()
        served = await serve(before=[probe])
        md = bearer(user_token(4))
        assert (await served.stub.UnaryUnary(EchoRequest(), metadata=md)).principal == principal(4)
        stream = served.stub.UnaryStream(EchoRequest(count=3), metadata=md)
        assert [r.principal async for r in stream] == [principal(4)] * 3
        assert probe.seen
        assert all(identity is None for _, identity in probe.seen)

    async def test_identity_does_not_leak_between_calls(self, serve: Serve) -> None:
        served = await serve(policy=Policy(public=[f"/{ECHO}/UnaryStream"]))
        for user in (1, 2, 1):
            md = bearer(user_token(user))
            response = await served.stub.UnaryUnary(EchoRequest(), metadata=md)
            assert response.principal == principal(user)
            public = served.stub.UnaryStream(EchoRequest(count=1), metadata=md)
            assert [r.principal async for r in public] == [""]
        assert current_identity() is None


class TestConstruction:
    def test_validator_must_be_async(self) -> None:
        class Sync:
            def validate(self, token: str) -> None:
                return None

        with pytest.raises(ConfigurationError):
            server_interceptor(Sync())  # type: ignore[arg-type]

    def test_policy_type_is_checked(self, validator: TokenValidator) -> None:
        with pytest.raises(ConfigurationError):
            server_interceptor(validator, policy={"strict": True})  # type: ignore[arg-type]

    def test_factory_returns_an_aio_interceptor(self, validator: TokenValidator) -> None:
        assert isinstance(server_interceptor(validator), grpc.aio.ServerInterceptor)

    def test_validator_must_offer_cached(self) -> None:
        class NoCache:
            async def validate(self, token: str) -> None:
                return None

        with pytest.raises(ConfigurationError, match="cached"):
            server_interceptor(NoCache())  # type: ignore[arg-type]

    async def test_the_interceptor_leaves_the_validator_it_is_given_alone(self) -> None:
        """Telemetry goes to the validator at its construction, never rewired by the server."""
        async with TokenValidator(static_options(jwks=None)) as validator:
            source = validator.key_source
            before = dict(vars(source))
            server_interceptor(validator, telemetry=Telemetry())
            assert vars(source) == before


def test_refusals_are_logged_at_debug_without_tokens(caplog: pytest.LogCaptureFixture) -> None:
    # The autouse fixture checks every test's logs for tokens; this pins that refusals log at all.
    assert logging.getLogger("grpc_obo.server").isEnabledFor(logging.DEBUG)


class _MisconfiguredMiddleTier(AsyncEcho):
    """A handler whose On-Behalf-Of exchange was refused for the middle tier's own credential."""

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        raise TokenExchangeError(
            "the token exchange failed",
            error="invalid_client",
            error_codes=[7000215],
            correlation_id="c0ffee",
            hint="the authority refused the client secret: check AZURE_CLIENT_SECRET",
        )


async def test_an_exchange_refused_for_our_own_credential_logs_the_setting_to_fix(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    # The operator's log line names the variable (the error's hint); the caller reads only the
    # fixed message.
    served = await serve(servicer=_MisconfiguredMiddleTier())
    error = await failure(
        served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(user_token()))
    )
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "AZURE_CLIENT_SECRET" not in (error.details() or "")
    lines = [r.getMessage() for r in caplog.records if r.name == "grpc_obo.server"]
    assert any(
        "On-Behalf-Of exchange failed" in line and "check AZURE_CLIENT_SECRET" in line
        for line in lines
    ), lines
