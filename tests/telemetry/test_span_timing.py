"""Every span of the two-hop chain lies within its parent in time (issue 23 point 5).

Backends draw a child that starts before its parent (or ends after it) outside the parent, and
Jaeger flags it as clock skew. grpc_obo validates in `intercept_service`, before
opentelemetry-instrumentation-grpc's aio server span exists: its `grpc_obo.validate` span must
therefore not be that server span's child. Checked for every exported span whose parent was
exported too, in both interceptor orders and without the instrumentation, over all four RPC
kinds: a first call (key fetches, validation, the exchange), a second one (caches) and refusals.
"""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tests.telemetry.otel import (  # noqa: F401 - the *_fixture names are pytest fixtures
    RPC_KINDS,
    SPAN_KEYS,
    SPAN_VALIDATE,
    ChainFactory,
    Recorder,
    call_kind,
    chains_fixture,
    is_child,
    recorder_fixture,
    tampered,
)

ORDERS = ("otel_first", "grpc_obo_first", "none")


def outside_their_parent(spans: list[ReadableSpan]) -> list[str]:
    """Each span that starts before, or ends after, its (exported) parent, described."""
    by_id = {s.context.span_id: s for s in spans}
    wrong: list[str] = []
    for span in spans:
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        if parent is None:
            continue
        assert span.start_time is not None and span.end_time is not None
        assert parent.start_time is not None and parent.end_time is not None
        early = parent.start_time - span.start_time
        late = span.end_time - parent.end_time
        if early > 0 or late > 0:
            wrong.append(
                f"{span.name} under {parent.name}: starts {max(early, 0) / 1e3:.0f} us before, "
                f"ends {max(late, 0) / 1e3:.0f} us after"
            )
    return wrong


@pytest.mark.parametrize("order", ORDERS)
async def test_every_span_of_the_chain_lies_within_its_parent(
    chains: ChainFactory, recorder: Recorder, order: str
) -> None:
    # Without the instrumentation, the Original's handler traces itself and propagates by hand,
    # so the chain is still one trace with parents to check.
    chain = await chains(
        client_order=order,
        server_order=order,
        start_validators=False,  # the first call fetches the signing keys, inside validation
        handler_span="app.handler" if order == "none" else None,
    )
    alice = chain.token("alice")

    for kind in RPC_KINDS:
        await call_kind(chain.stub, kind, chain.auth(alice))
    for kind in RPC_KINDS:  # caches: no validation, the token from the exchange cache
        await call_kind(chain.stub, kind, chain.auth(alice))
    forged = tampered(chain.token("alice"))
    for metadata in ((), chain.auth(forged), chain.auth(chain.token("alice", scopes=["Other"]))):
        with pytest.raises(grpc.aio.AioRpcError):
            await call_kind(chain.stub, "UnaryUnary", metadata)
    await recorder.settle()

    spans = recorder.spans()
    assert len(recorder.named(SPAN_VALIDATE)) >= 5, recorder.tree()  # 2 accepted, 3 refused
    assert recorder.named(SPAN_KEYS), recorder.tree()
    parented = [s for s in spans if s.parent is not None and any(is_child(s, p) for p in spans)]
    assert any(s.name == SPAN_VALIDATE for s in parented), recorder.tree()
    assert outside_their_parent(spans) == [], recorder.tree()


async def test_a_caller_without_trace_context_gets_its_validation_as_a_trace_of_its_own(
    chains: ChainFactory, recorder: Recorder
) -> None:
    """No `traceparent` from the caller: no span of the RPC exists yet while grpc_obo validates,
    so the validation cannot be inside one; it is a root (documented in the telemetry guide),
    and the server span that follows is not its parent."""
    chain = await chains(test_channel_traced=False)

    await chain.call(chain.token("alice"))
    await recorder.wait_count(SPAN_VALIDATE, 2)
    await recorder.settle()

    spans = recorder.spans()
    original = [
        s
        for s in recorder.named(SPAN_VALIDATE)
        if s.resource.attributes.get("service.name") == "original"
    ]
    assert len(original) == 1, recorder.tree()
    assert original[0].parent is None
    assert not any(is_child(original[0], s) for s in spans)
    assert outside_their_parent(spans) == [], recorder.tree()
