"""What grpc_obo's telemetry may and may not export, checked on everything the SDK would send.

Identities: plain, HMAC-hashed or omitted on spans, never on metrics or in span names.
Secrets: no token (incoming, exchanged, forged), no piece of one, no client secret, password,
private key, username, display name or claims challenge value, in any span name, attribute,
event, link, status description or resource, nor in any metric data point, whatever happened.
"""

from __future__ import annotations

import hashlib
import hmac

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from tests.telemetry.otel import (  # noqa: F401 - the *_fixture names are pytest fixtures
    CLAIMS_CHALLENGE,
    DOWNSTREAM,
    FORBIDDEN_ALWAYS,
    ORIGINAL,
    SPAN_VALIDATE,
    ChainFactory,
    Recorder,
    TracedChain,
    attrs,
    chains_fixture,
    claims_forms,
    find_leaks,
    recorder_fixture,
    run_every_outcome,
    service_of,
    token_pieces,
    world_secrets,
)

KEY = b"telemetry-tests-identity-key-0001"
IDENTITY_ATTRIBUTES = ("grpc_obo.user.oid", "grpc_obo.user.tid", "grpc_obo.client.id")


def identifiers(chain: TracedChain) -> dict[str, str]:
    """The raw identifiers of the callers in the chain (what plain mode exports)."""
    world = chain.authority.world
    alice = world.user("alice")
    return {
        "alice oid": alice.oid,
        "alice tid": alice.tenant_id,
        "client app id": world.app("client").client_id,
        "Original API app id": world.app("original").client_id,
    }


def hashed(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


def identity_spans(recorder: Recorder) -> list[ReadableSpan]:
    """Server spans and validate spans: where the caller's identity goes."""
    return [s for s in recorder.spans() if s.kind.name == "SERVER" or s.name == SPAN_VALIDATE]


async def two_calls(chain: TracedChain) -> None:
    token = chain.token("alice")
    for _ in range(2):
        await chain.call(token)
    await chain.recorder.expect(9 + 5)


async def test_hashed_identities_are_hmac_hex_of_oid_tid_and_client_id(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(identities="hashed", identity_key=KEY)

    await two_calls(chain)

    raw = identifiers(chain)
    alice = chain.authority.world.user("alice")
    checked = 0
    by_id = recorder.by_id()
    for service, caller_app in ((ORIGINAL, "client app id"), (DOWNSTREAM, "Original API app id")):
        expected = {
            "grpc_obo.user.oid": hashed(alice.oid),
            "grpc_obo.user.tid": hashed(alice.tenant_id),
            "grpc_obo.client.id": hashed(raw[caller_app]),
        }
        for server in recorder.server(service):  # both calls: cache miss and cache hit
            # The validate span is the server span's sibling (under the caller's client span).
            caller = by_id[server.parent.span_id] if server.parent is not None else None
            siblings = recorder.children(caller) if caller is not None else []
            for span in [
                server,
                *(c for c in siblings if c.name == SPAN_VALIDATE and service_of(c) == service),
            ]:
                assert {k: attrs(span).get(k) for k in IDENTITY_ATTRIBUTES} == expected, span.name
                checked += 1
    assert checked == 2 * 2 + 2  # server spans of both hops, twice; validate spans once each
    assert find_leaks(raw, recorder.spans(), recorder.reader.get_metrics_data()) == []


async def test_omitted_identities_leave_no_identifier_on_any_span(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(identities="omit")

    await two_calls(chain)

    for span in recorder.spans():
        assert not set(IDENTITY_ATTRIBUTES) & set(attrs(span)), span.name
    for span in identity_spans(recorder):
        assert attrs(span)["grpc_obo.identity.kind"] == "user"  # the kind is no identifier
    forbidden = {
        **identifiers(chain),
        **{f"{k} hashed": hashed(v) for k, v in identifiers(chain).items()},
    }
    assert find_leaks(forbidden, recorder.spans(), recorder.reader.get_metrics_data()) == []


@pytest.mark.parametrize("identities", ["plain", "hashed"])
async def test_identities_never_go_on_metrics_or_span_names(
    chains: ChainFactory, recorder: Recorder, identities: str
) -> None:
    key = {"identity_key": KEY} if identities == "hashed" else {}
    chain = await chains(identities=identities, **key)

    await run_every_outcome(chain)
    await recorder.settle()

    raw = identifiers(chain)
    for user in ("alice", "bob", "carol"):
        found = chain.authority.world.user(user)
        raw[f"{user} oid"] = found.oid
        raw[f"{user} tid"] = found.tenant_id
    forbidden = {**raw, **{f"{k} hashed": hashed(v) for k, v in raw.items()}}
    # Identities are on spans (the test would be vacuous otherwise) ...
    exported = {str(v) for s in recorder.spans() for v in attrs(s).values()}
    expected = raw["alice oid"] if identities == "plain" else hashed(raw["alice oid"])
    assert expected in exported
    # ... never in span names, nor anywhere in metrics.
    names = [s for s in recorder.spans() if any(v in s.name for v in forbidden.values())]
    assert names == []
    assert find_leaks(forbidden, [], recorder.reader.get_metrics_data()) == []


# -- never exported -----------------------------------------------------------------------------


def forbidden_values(chain: TracedChain) -> dict[str, str]:
    """Every secret or personal value the chain handled, labelled (never printed)."""
    forbidden: dict[str, str] = {**FORBIDDEN_ALWAYS, **world_secrets(chain.authority)}
    forbidden.update(claims_forms(CLAIMS_CHALLENGE))
    forbidden["claims challenge policy id"] = "5eC12e70-0000-4000-8000-00000000ca01"
    tokens = chain.all_tokens()
    assert len(chain.leaf.tokens) >= 8  # the exchanged tokens were captured
    for number, token in enumerate(dict.fromkeys(tokens)):
        for label, piece in token_pieces(token).items():
            forbidden[f"{label} #{number}"] = piece
    return forbidden


@pytest.mark.parametrize(
    ("client_order", "server_order"),
    [("otel_first", "otel_first"), ("grpc_obo_first", "grpc_obo_first")],
)
async def test_no_token_secret_or_personal_name_is_ever_exported(
    chains: ChainFactory, recorder: Recorder, client_order: str, server_order: str
) -> None:
    chain = await chains(client_order=client_order, server_order=server_order)

    codes = await run_every_outcome(chain)
    await recorder.settle()

    assert codes["alice StreamStream 2"] == grpc.StatusCode.OK
    assert codes["no token"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["no scope"] == grpc.StatusCode.PERMISSION_DENIED
    assert codes["other audience"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["forged signature"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["claims challenge"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["authority down"] == grpc.StatusCode.UNAVAILABLE
    assert len(recorder.spans()) > 40
    leaks = find_leaks(
        forbidden_values(chain), recorder.spans(), recorder.reader.get_metrics_data()
    )
    assert leaks == []


async def test_the_leak_search_finds_a_secret_wherever_it_is_exported(
    recorder: Recorder,
) -> None:
    """The search is not vacuous: a planted value is found in each place an exporter sends."""
    secret = "s3cr3t-value"
    tracer = recorder.tracer()
    link = Link(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1)), {"k": secret})
    with tracer.start_as_current_span(f"name {secret}"):
        pass
    with tracer.start_as_current_span("attribute", attributes={"k": f"x{secret}x"}):
        pass
    with tracer.start_as_current_span("attribute key", attributes={secret: 1}):
        pass
    with tracer.start_as_current_span("sequence", attributes={"k": ["a", secret]}):
        pass
    with tracer.start_as_current_span("event") as span:
        span.add_event("e", {"k": secret})
    with tracer.start_as_current_span("link", links=[link]):
        pass
    with tracer.start_as_current_span("status") as span:
        span.set_status(Status(StatusCode.ERROR, f"failed: {secret}"))
    counter = recorder.meter_provider.get_meter("tests").create_counter("c")
    counter.add(1, {"k": secret})

    leaks = find_leaks({"planted": secret}, recorder.spans(), recorder.reader.get_metrics_data())

    assert leaks == [
        "planted in metric 'c' point attributes",
        "planted in span 'attribute key' attributes",
        "planted in span 'attribute' attributes",
        "planted in span 'event' event 'e' attributes",
        "planted in span 'link' link attributes",
        f"planted in span 'name {secret}' name",
        "planted in span 'sequence' attributes",
        "planted in span 'status' status description",
    ]
    assert find_leaks({"absent": "not-there"}, recorder.spans()) == []


def test_switched_off_telemetry_puts_no_identity_on_anyone_s_span() -> None:
    """A no-op tracer provider for grpc_obo means none of its attributes, on its own spans or
    on the instrumentation's (the caller's span stays as the instrumentation made it)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import grpc_obo
    from grpc_obo._telemetry import recorder_for

    recording = TracerProvider().get_tracer("test")
    silent = recorder_for(grpc_obo.Telemetry(tracer_provider=trace.NoOpTracerProvider()))
    loud = recorder_for(grpc_obo.Telemetry(tracer_provider=TracerProvider()))
    oid, tid = "a11ce000-0000-4000-8000-00000000a11c", "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
    with recording.start_as_current_span("rpc") as span:
        silent.annotate_caller(oid=oid, tid=tid, client_id=None, kind="user")
        assert "grpc_obo.user.oid" not in (span.attributes or {})  # type: ignore[attr-defined]
        loud.annotate_caller(oid=oid, tid=tid, client_id=None, kind="user")
        assert span.attributes["grpc_obo.user.oid"] == oid  # type: ignore[attr-defined]
