"""Kit for the telemetry tests: an in-memory OpenTelemetry SDK, a two-hop On-Behalf-Of chain built
with instrumentation in a chosen order, and a search for secrets in everything that was exported.

The chain is the README's, on the tests' own Echo service (all four RPC kinds) so that it does
not move with the examples: the test's channel (service "client") calls the Original API, whose
handlers call the Downstream API through an On-Behalf-Of channel; both validate with the real
`TokenValidator` against the session's dev authority, exchanges go through real MSAL.

Every recorder has its *own* tracer providers, one per service (resource `service.name`
"client", "original", "downstream", as three processes would have), all writing to one in-memory
exporter, and one MeterProvider; never the global ones. grpc_obo gets them through
`grpc_obo.Telemetry(tracer_provider=..., meter_provider=...)`, opentelemetry-instrumentation-grpc
through its `tracer_provider=` arguments. Test modules import the fixtures `recorder` and
`chains` by their function names:
`from tests.telemetry.otel import chains_fixture, recorder_fixture  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import grpc.aio
import pytest
from opentelemetry import propagate
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

SPAN_VALIDATE = "grpc_obo.validate"
SPAN_KEYS = "grpc_obo.keys.fetch"
SPAN_ACQUIRE = "grpc_obo.obo.acquire"
SPAN_AUTHORITY = "grpc_obo.authority.request"
GRPC_OBO_SPANS = frozenset({SPAN_VALIDATE, SPAN_KEYS, SPAN_ACQUIRE, SPAN_AUTHORITY})

# Services (resource service.name), named after the dev authority's apps.
CLIENT = "client"
ORIGINAL = "original"
DOWNSTREAM = "downstream"
SERVICES = (CLIENT, ORIGINAL, DOWNSTREAM)

ECHO = "grpc_obo.testing.v1.Echo"
RPC_KINDS = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")

ORIGINAL_SCOPE = "access_as_user"
DOWNSTREAM_SCOPE = "Data.Read"
ORIGINAL_POLICY = grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={ORIGINAL_SCOPE}))
DOWNSTREAM_POLICY = grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={DOWNSTREAM_SCOPE}))

RPC_TIMEOUT = 10.0  # every RPC of these tests; a hang fails the test instead of the session
WAIT_TIMEOUT = 5.0  # waiting for spans that end in done callbacks

FAST_RETRY = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=2.0)

Order = Literal["otel_first", "grpc_obo_first", "none"]
"""Where opentelemetry-instrumentation-grpc sits relative to grpc_obo in an interceptor list:
before it ("otel_first": what the global instrumentor does), after it, or not at all."""


# -- the in-memory SDK ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """Private tracer providers (one per service) and a meter provider, kept in memory."""

    providers: dict[str, TracerProvider]
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    @classmethod
    def create(cls) -> Recorder:
        exporter = InMemorySpanExporter()
        providers: dict[str, TracerProvider] = {}
        for service in SERVICES:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            providers[service] = provider
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(
            resource=Resource.create({"service.name": "grpc-obo-telemetry-tests"}),
            metric_readers=[reader],
        )
        return cls(providers, exporter, meter_provider, reader)

    def telemetry(self, service: str = ORIGINAL, **options: Any) -> grpc_obo.Telemetry:
        """A `grpc_obo.Telemetry` on `service`'s tracer provider (`identities=`, ...)."""
        return grpc_obo.Telemetry(
            tracer_provider=self.providers[service], meter_provider=self.meter_provider, **options
        )

    def tracer(self, service: str = CLIENT) -> Any:
        return self.providers[service].get_tracer("tests.telemetry")

    # spans

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str, **where: Any) -> ReadableSpan:
        """The one finished span called `name` whose attributes match `where` (dots as __)."""
        wanted = {key.replace("__", "."): value for key, value in where.items()}
        found = [
            s
            for s in self.named(name)
            if all((s.attributes or {}).get(k) == v for k, v in wanted.items())
        ]
        assert len(found) == 1, f"{len(found)} spans {name} {wanted}:\n{self.tree()}"
        return found[0]

    def _rpc(self, kind: SpanKind, service: str, method: str | None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans()
            if s.kind == kind
            and service_of(s) == service
            and s.name.startswith(f"/{ECHO}/")
            and (method is None or s.name == f"/{ECHO}/{method}")
        ]

    def server(self, service: str, method: str | None = None) -> list[ReadableSpan]:
        """The instrumentation's SERVER spans in `service` (name `/pkg.Service/Method`)."""
        return self._rpc(SpanKind.SERVER, service, method)

    def client(self, service: str, method: str | None = None) -> list[ReadableSpan]:
        """The instrumentation's CLIENT spans of calls that `service` made."""
        return self._rpc(SpanKind.CLIENT, service, method)

    def by_id(self) -> dict[int, ReadableSpan]:
        return {s.context.span_id: s for s in self.spans()}

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        own = span.context.span_id
        return sorted(
            (s for s in self.spans() if s.parent is not None and s.parent.span_id == own),
            key=lambda s: s.start_time or 0,
        )

    async def wait_for(
        self, predicate: Callable[[list[ReadableSpan]], bool], timeout: float = WAIT_TIMEOUT
    ) -> list[ReadableSpan]:
        """Finished spans once `predicate` holds; fails after `timeout` with the spans seen.

        CLIENT spans of the instrumentation end in grpc done callbacks, SERVER spans when the
        handler returns: either may land a moment after the awaited call gives its result.
        """
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"spans did not arrive in {timeout} s:\n{self.tree()}")
            await asyncio.sleep(0.01)

    async def wait_count(self, name: str, count: int) -> list[ReadableSpan]:
        await self.wait_for(lambda spans: sum(s.name == name for s in spans) >= count)
        return self.named(name)

    async def expect(self, count: int) -> list[ReadableSpan]:
        """At least `count` finished spans, then no more for a moment: what one call left."""
        await self.wait_for(lambda spans: len(spans) >= count)
        await self.settle()
        return self.spans()

    async def settle(self, quiet: float = 0.05, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until no new span finished for `quiet` seconds (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            now = len(self.exporter.get_finished_spans())
            if now == seen:
                return
            seen = now
            await asyncio.sleep(quiet)
        raise AssertionError(f"spans kept coming for {timeout} s:\n{self.tree()}")

    def clear(self) -> None:
        self.exporter.clear()

    def tree(self) -> str:
        """The finished spans as an indented tree (for assertion messages)."""
        spans = self.spans()
        ids = {s.context.span_id for s in spans}
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            shown = {k: v for k, v in attrs(span).items() if k.startswith("grpc_obo")}
            error = attrs(span).get("error.type")
            lines.append(
                f"{'  ' * depth}{span.name} [{span.kind.name} in {service_of(span)}] "
                f"trace={span.context.trace_id:032x} status={span.status.status_code.name}"
                f"{' error.type=' + str(error) if error else ''} {shown}"
            )
            for child in self.children(span):
                walk(child, depth + 1)

        for root in sorted(
            (s for s in spans if s.parent is None or s.parent.span_id not in ids),
            key=lambda s: s.start_time or 0,
        ):
            walk(root, 0)
        return "\n".join(lines) or "(no spans)"

    # metrics

    def metric_points(self, name: str) -> list[Any]:
        """The data points of metric `name` collected now (cumulative), over every scope."""
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def metric_names(self) -> set[str]:
        data = self.reader.get_metrics_data()
        return {
            metric.name
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture(name="recorder")
def recorder_fixture() -> Iterator[Recorder]:
    """Fresh in-memory tracer providers and meter provider for one test."""
    rec = Recorder.create()
    try:
        yield rec
    finally:
        rec.shutdown()


# -- span relations ------------------------------------------------------------------------------


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def service_of(span: ReadableSpan) -> str | None:
    return span.resource.attributes.get("service.name") if span.resource else None


# -- the chain's services --------------------------------------------------------------------------


class Relay(echo_pb2_grpc.EchoServicer):
    """The Original API: every call is passed on to the Downstream API, as the caller.

    `handler_span`: the name of a span this service starts around its own work, with the trace
    context injected into the downstream call by hand (an application that traces itself
    without the instrumentation library); None for neither.
    """

    def __init__(
        self,
        downstream: echo_pb2_grpc.EchoStub,
        tracer: Any = None,
        handler_span: str | None = None,
    ) -> None:
        self._downstream = downstream
        self._tracer = tracer
        self._handler_span = handler_span

    @contextlib.contextmanager
    def _work(self) -> Iterator[tuple[tuple[str, str], ...]]:
        if self._handler_span is None:
            yield ()
            return
        with self._tracer.start_as_current_span(self._handler_span):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield tuple(carrier.items())

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        with self._work() as metadata:
            return await self._downstream.UnaryUnary(
                request, metadata=metadata, timeout=RPC_TIMEOUT
            )

    async def UnaryStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        with self._work() as metadata:
            async for item in self._downstream.UnaryStream(
                request, metadata=metadata, timeout=RPC_TIMEOUT
            ):
                yield item

    async def StreamUnary(self, request_iterator: Any, context: Any) -> Any:
        with self._work() as metadata:
            return await self._downstream.StreamUnary(
                request_iterator, metadata=metadata, timeout=RPC_TIMEOUT
            )

    async def StreamStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        with self._work() as metadata:
            async for item in self._downstream.StreamStream(
                request_iterator, metadata=metadata, timeout=RPC_TIMEOUT
            ):
                yield item


class Leaf(echo_pb2_grpc.EchoServicer):
    """The Downstream API: answers with the principal it saw, and keeps every token it was
    called with (for the leak search: the exchanged token never reaches the test otherwise)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def _seen(self) -> str:
        identity = grpc_obo.current_identity()
        assert identity is not None
        self.tokens.append(identity.token.reveal())
        return identity.principal

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        return echo_pb2.EchoResponse(text=request.text, principal=self._seen())

    async def UnaryStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        principal = self._seen()
        for number in range(max(request.count, 1)):
            yield echo_pb2.EchoResponse(text=f"{request.text}-{number}", principal=principal)

    async def StreamUnary(self, request_iterator: Any, context: Any) -> Any:
        principal = self._seen()
        texts = [request.text async for request in request_iterator]
        return echo_pb2.EchoResponse(text="+".join(texts), principal=principal)

    async def StreamStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        principal = self._seen()
        async for request in request_iterator:
            yield echo_pb2.EchoResponse(text=request.text, principal=principal)


def validator_options(authority: DevAuthority, api: str) -> grpc_obo.ValidatorOptions:
    """How `api` validates its tokens: its own audience, the dev authority's tenants only."""
    app = authority.world.app(api)
    return grpc_obo.ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(t.id for t in authority.world.tenants),
        audiences=frozenset({app.client_id, app.app_id_uri or app.client_id}),
        authority_host=authority.base_url,
        v1_issuer_host=authority.base_url,
        ssl_context=ssl.create_default_context(cafile=str(authority.ca_file)),
    )


def confidential_client(authority: DevAuthority, app_name: str) -> grpc_obo.ConfidentialClient:
    app = authority.world.app(app_name)
    return grpc_obo.ConfidentialClient(
        client_id=app.client_id,
        tenant=authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(app.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )


def scope(authority: DevAuthority, api: str, name: str) -> str:
    return f"{authority.world.app(api).app_id_uri}/{name}"


# -- the chain -----------------------------------------------------------------------------------


def _server_interceptors(
    order: Order, provider: TracerProvider, ours: grpc.aio.ServerInterceptor
) -> list[grpc.aio.ServerInterceptor]:
    if order == "none":
        return [ours]
    otel = aio_server_interceptor(tracer_provider=provider)
    return [otel, ours] if order == "otel_first" else [ours, otel]


def _client_interceptors(
    order: Order, provider: TracerProvider, ours: list[grpc.aio.ClientInterceptor]
) -> list[grpc.aio.ClientInterceptor]:
    if order == "none":
        return list(ours)
    otel = aio_client_interceptors(tracer_provider=provider)
    return [*otel, *ours] if order == "otel_first" else [*ours, *otel]


@dataclass
class TracedChain:
    """client -> Original API -> (On-Behalf-Of) -> Downstream API, with telemetry everywhere."""

    authority: DevAuthority
    recorder: Recorder
    obo: grpc_obo.OnBehalfOf
    leaf: Leaf
    channel: grpc.aio.Channel
    """The test's channel to the Original API (with the instrumentation's client interceptors
    unless the chain was built with test_channel_traced=False)."""
    downstream_scope: str
    handled_tokens: list[str] = field(default_factory=list)
    """Every token the test minted or sent (for the leak search)."""
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list, repr=False)

    @property
    def stub(self) -> echo_pb2_grpc.EchoStub:
        return echo_pb2_grpc.EchoStub(self.channel)

    def token(self, user: str = "alice", **options: Any) -> str:
        """A token the client app would hold for the Original API (minted, no HTTP)."""
        options.setdefault("scopes", [ORIGINAL_SCOPE])
        minted = self.authority.mint_user_token(
            user, audience="original", client="client", **options
        )
        self.handled_tokens.append(minted)
        return minted

    @staticmethod
    def auth(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def all_tokens(self) -> list[str]:
        return [*self.handled_tokens, *self.leaf.tokens]

    async def call(self, token: str | None, **kwargs: Any) -> echo_pb2.EchoResponse:
        """One unary call through the chain, as the holder of `token` (None: no token)."""
        metadata = list(kwargs.pop("metadata", ()))
        if token is not None:
            metadata.extend(self.auth(token))
        return await self.stub.UnaryUnary(
            echo_pb2.EchoRequest(text="hello"),
            metadata=tuple(metadata),
            timeout=RPC_TIMEOUT,
            **kwargs,
        )

    async def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()


async def start_traced_chain(
    authority: DevAuthority,
    recorder: Recorder,
    *,
    client_order: Order = "otel_first",
    server_order: Order = "otel_first",
    test_channel_traced: bool = True,
    start_validators: bool = True,
    handler_span: str | None = None,
    **telemetry_options: Any,
) -> TracedChain:
    """Build and start the chain on 127.0.0.1:0 with the instrumentation where asked.

    `server_order` places the instrumentation's server interceptor on both APIs,
    `client_order` its client interceptors on the Original API's outbound channel;
    `test_channel_traced` adds them to the test's own channel (then the client's CLIENT span is
    the root of each call's trace). Validators fetch their keys at start (outside any trace)
    unless `start_validators=False`. `handler_span`: see `Relay`. `telemetry_options` go to
    every `grpc_obo.Telemetry` (`identities=`, `identity_key=`). The recorder is cleared once
    the chain runs.
    """
    original_tp, downstream_tp = recorder.providers[ORIGINAL], recorder.providers[DOWNSTREAM]
    closers: list[Callable[[], Awaitable[Any]]] = []

    # Key fetches are traced through each validator's own telemetry (given at construction).
    down_validator = grpc_obo.TokenValidator(
        validator_options(authority, "downstream"),
        telemetry=recorder.telemetry(DOWNSTREAM, **telemetry_options),
    )
    orig_validator = grpc_obo.TokenValidator(
        validator_options(authority, "original"),
        telemetry=recorder.telemetry(ORIGINAL, **telemetry_options),
    )
    closers += [down_validator.close, orig_validator.close]
    obo = grpc_obo.OnBehalfOf(
        confidential_client(authority, "original"),
        retry=FAST_RETRY,
        telemetry=recorder.telemetry(ORIGINAL, **telemetry_options),
    )
    closers.append(obo.close)

    leaf = Leaf()
    downstream = grpc.aio.server(
        interceptors=_server_interceptors(
            server_order,
            downstream_tp,
            grpc_obo.server_interceptor(
                down_validator,
                policy=DOWNSTREAM_POLICY,
                telemetry=recorder.telemetry(DOWNSTREAM, **telemetry_options),
            ),
        )
    )
    echo_pb2_grpc.add_EchoServicer_to_server(leaf, downstream)
    downstream_address = f"127.0.0.1:{downstream.add_insecure_port('127.0.0.1:0')}"
    await downstream.start()
    closers.append(lambda: downstream.stop(grace=0.5))

    downstream_scope = scope(authority, "downstream", DOWNSTREAM_SCOPE)
    outbound = grpc.aio.insecure_channel(
        downstream_address,
        interceptors=_client_interceptors(
            client_order, original_tp, obo.client_interceptors(scopes=[downstream_scope])
        ),
    )
    closers.append(outbound.close)
    original = grpc.aio.server(
        interceptors=_server_interceptors(
            server_order,
            original_tp,
            grpc_obo.server_interceptor(
                orig_validator,
                policy=ORIGINAL_POLICY,
                telemetry=recorder.telemetry(ORIGINAL, **telemetry_options),
            ),
        )
    )
    relay = Relay(echo_pb2_grpc.EchoStub(outbound), recorder.tracer(ORIGINAL), handler_span)
    echo_pb2_grpc.add_EchoServicer_to_server(relay, original)
    original_address = f"127.0.0.1:{original.add_insecure_port('127.0.0.1:0')}"
    await original.start()
    closers.append(lambda: original.stop(grace=0.5))

    channel = grpc.aio.insecure_channel(
        original_address,
        interceptors=(
            aio_client_interceptors(tracer_provider=recorder.providers[CLIENT])
            if test_channel_traced
            else None
        ),
    )
    closers.append(channel.close)
    if start_validators:
        await asyncio.wait_for(orig_validator.start(), RPC_TIMEOUT)
        await asyncio.wait_for(down_validator.start(), RPC_TIMEOUT)
    recorder.clear()
    return TracedChain(
        authority=authority,
        recorder=recorder,
        obo=obo,
        leaf=leaf,
        channel=channel,
        downstream_scope=downstream_scope,
        _closers=closers,
    )


ChainFactory = Callable[..., Awaitable[TracedChain]]


@pytest.fixture(name="chains")
async def chains_fixture(
    grpc_obo_authority: DevAuthority, recorder: Recorder
) -> AsyncIterator[ChainFactory]:
    """`await chains(client_order=..., server_order=..., identities=...)`: chains closed after."""
    started: list[TracedChain] = []

    async def start(**options: Any) -> TracedChain:
        chain = await start_traced_chain(grpc_obo_authority, recorder, **options)
        started.append(chain)
        return chain

    try:
        yield start
    finally:
        for chain in started:
            await chain.close()


# -- RPCs of every kind ----------------------------------------------------------------------------


async def _requests(count: int) -> AsyncIterator[echo_pb2.EchoRequest]:
    for number in range(count):
        yield echo_pb2.EchoRequest(text=f"r{number}")


async def _held(until: asyncio.Event) -> AsyncIterator[echo_pb2.EchoRequest]:
    """A request stream that stays open, sending nothing, until the call has ended.

    NOTE: for refused calls. grpc issue 36066 (open): a grpc.aio client that is still writing
    requests when the server ends the call may report INTERNAL "Internal error from Core"
    instead of the server's status (seen here on ~10% of refused stream-stream calls).
    """
    await until.wait()
    yield echo_pb2.EchoRequest(text="never sent")


async def call_kind(
    stub: echo_pb2_grpc.EchoStub,
    kind: str,
    metadata: Iterable[tuple[str, str]],
    *,
    hold_requests: bool = False,
) -> Any:
    """One call of the given kind (unary-unary, unary-stream, stream-unary, stream-stream).

    `hold_requests`: request streams send nothing until the call ended (see `_held`).
    """
    md = tuple(metadata)
    ended = asyncio.Event()

    def requests() -> AsyncIterator[echo_pb2.EchoRequest]:
        return _held(ended) if hold_requests else _requests(2)

    request = echo_pb2.EchoRequest(text="hello", count=2)
    try:
        if kind == "UnaryUnary":
            return await stub.UnaryUnary(request, metadata=md, timeout=RPC_TIMEOUT)
        if kind == "UnaryStream":
            return [r async for r in stub.UnaryStream(request, metadata=md, timeout=RPC_TIMEOUT)]
        if kind == "StreamUnary":
            return await stub.StreamUnary(requests(), metadata=md, timeout=RPC_TIMEOUT)
        if kind == "StreamStream":
            return [
                r async for r in stub.StreamStream(requests(), metadata=md, timeout=RPC_TIMEOUT)
            ]
        raise ValueError(kind)
    finally:
        ended.set()


# -- the leak search -------------------------------------------------------------------------------


def token_pieces(token: str) -> dict[str, str]:
    """A token and the parts of it that identify it on their own (payload, signature)."""
    _header, payload, signature = token.split(".")
    return {"token": token, "token payload": payload, "token signature": signature}


def world_secrets(authority: DevAuthority) -> dict[str, str]:
    """Every credential and personal name of the dev authority's world, labelled.

    Client secrets, certificate private keys, user passwords, and the user claims that carry
    personal data in tokens (`preferred_username`/`upn`/`unique_name` = the username, `name`
    = the display name, and the local part of the username).
    """
    found: dict[str, str] = {}
    for app in authority.world.apps:
        for number, secret in enumerate(app.secrets):
            found[f"secret {number} of app {app.name}"] = secret
        for number, certificate in enumerate(app.certificates):
            if certificate.private_key_pem:
                body = b"".join(certificate.private_key_pem.splitlines()[1:-1]).decode()
                found[f"private key {number} of app {app.name}"] = body[40:100]
    for user in authority.world.users:
        found[f"password of {user.username}"] = user.password
        found[f"username (preferred_username/upn) of {user.username}"] = user.username
        found[f"display name (name) of {user.username}"] = user.display_name
    return found


def claims_forms(claims: str) -> dict[str, str]:
    """A claims challenge value as it may travel: raw JSON, compact JSON, base64(url)."""
    compact = json.dumps(json.loads(claims), separators=(",", ":"))
    encoded = base64.b64encode(compact.encode()).decode()
    return {
        "claims challenge": claims,
        "claims challenge (compact)": compact,
        "claims challenge (base64)": encoded.rstrip("="),
        "claims challenge (base64url)": base64.urlsafe_b64encode(compact.encode())
        .decode()
        .rstrip("="),
    }


FORBIDDEN_ALWAYS = {"JWT prefix eyJ": "eyJ"}


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, Iterable):
        for item in value:
            yield from _texts(item)
    elif value is not None:
        yield str(value)


def exported_texts(
    spans: Iterable[ReadableSpan], metrics_data: Any = None
) -> Iterator[tuple[str, str]]:
    """(where, text) for every piece of text a span or metric exporter would send.

    Span: name, attributes (keys and values), events (name, attributes), links (ids and
    attributes), status description, resource, instrumentation scope. Metrics: names,
    descriptions, units, every data point's attributes, resources and scopes.
    """
    for span in spans:
        where = f"span {span.name!r}"
        yield f"{where} name", span.name
        for text in _texts(span.attributes or {}):
            yield f"{where} attributes", text
        for event in span.events:
            yield f"{where} event name", event.name
            for text in _texts(event.attributes or {}):
                yield f"{where} event {event.name!r} attributes", text
        for link in span.links:
            yield f"{where} link", f"{link.context.trace_id:032x}{link.context.span_id:016x}"
            for text in _texts(link.attributes or {}):
                yield f"{where} link attributes", text
        if span.status.description:
            yield f"{where} status description", span.status.description
        if span.resource is not None:
            for text in _texts(span.resource.attributes):
                yield f"{where} resource", text
        scope = span.instrumentation_scope
        if scope is not None:
            yield f"{where} scope", f"{scope.name} {scope.version or ''}"
    if metrics_data is None:
        return
    for resource_metrics in metrics_data.resource_metrics:
        for text in _texts(resource_metrics.resource.attributes):
            yield "metric resource", text
        for scope_metrics in resource_metrics.scope_metrics:
            yield "metric scope", scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                where = f"metric {metric.name!r}"
                yield f"{where} name", metric.name
                yield f"{where} description", metric.description or ""
                yield f"{where} unit", metric.unit or ""
                for point in metric.data.data_points:
                    for text in _texts(point.attributes or {}):
                        yield f"{where} point attributes", text


def find_leaks(
    forbidden: Mapping[str, str], spans: Iterable[ReadableSpan], metrics_data: Any = None
) -> list[str]:
    """Where any forbidden value appears in what was exported ([] when nowhere).

    `forbidden` maps a label (what the value is; never the value itself, so a failure message
    does not print a secret) to the value. Matching is by substring, case-sensitive.
    """
    leaks: list[str] = []
    values = {label: value for label, value in forbidden.items() if value}
    for where, text in exported_texts(spans, metrics_data):
        for label, value in values.items():
            if value in text:
                leaks.append(f"{label} in {where}")
    return sorted(set(leaks))


# -- a workload with every outcome -----------------------------------------------------------------


CLAIMS_CHALLENGE = (
    '{"access_token":{"capolids":{"essential":true,'
    '"values":["5eC12e70-0000-4000-8000-00000000ca01"]}}}'
)
"""The claims challenge the workload's conditional-access policy sends (a recognisable value)."""


def tampered(token: str) -> str:
    """The same token with another signature (same length, still base64url)."""
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


async def run_every_outcome(chain: TracedChain) -> dict[str, grpc.StatusCode]:
    """Drive the chain through success, cache hits, refusals, a claims challenge and a failed
    exchange; every token used is recorded in `chain.handled_tokens`. Returns each step's code.

    - alice: all four RPC kinds, twice (exchange, then caches);
    - no token; a token without the scope; a token for another audience; a forged signature;
    - bob: conditional access wants MFA at the exchange (claims challenge);
    - carol: the authority answers 503 to her token requests (retries, then UNAVAILABLE).
    """
    codes: dict[str, grpc.StatusCode] = {}
    authority = chain.authority

    async def step(name: str, call: Awaitable[Any]) -> None:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            codes[name] = error.code()
        else:
            codes[name] = grpc.StatusCode.OK

    alice = chain.token("alice")
    for round_ in (1, 2):
        for kind in RPC_KINDS:
            await step(f"alice {kind} {round_}", call_kind(chain.stub, kind, chain.auth(alice)))
    await step("no token", call_kind(chain.stub, "UnaryUnary", ()))
    await step(
        "no scope",
        call_kind(chain.stub, "UnaryUnary", chain.auth(chain.token("alice", scopes=["Other"]))),
    )
    elsewhere = authority.mint_user_token("alice", audience="downstream", client="client")
    forged = tampered(chain.token("alice"))
    chain.handled_tokens += [elsewhere, forged]
    await step("other audience", call_kind(chain.stub, "UnaryUnary", chain.auth(elsewhere)))
    await step("forged signature", call_kind(chain.stub, "UnaryUnary", chain.auth(forged)))
    authority.faults.require_claims("bob", claims=CLAIMS_CHALLENGE)
    bob = chain.token("bob")
    await step("claims challenge", call_kind(chain.stub, "UnaryUnary", chain.auth(bob)))
    authority.faults.fail(503, user="carol", times=None)
    await step(
        "authority down", call_kind(chain.stub, "UnaryUnary", chain.auth(chain.token("carol")))
    )
    return codes
