"""`AppOnly(..., telemetry=)`: client-credentials acquisitions traced and measured like OBO ones."""

from __future__ import annotations

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.telemetry.otel import (  # noqa: F401 - the *_fixture names are pytest fixtures
    FAST_RETRY,
    ORIGINAL,
    SPAN_ACQUIRE,
    SPAN_AUTHORITY,
    Recorder,
    attrs,
    confidential_client,
    find_leaks,
    is_child,
    recorder_fixture,
    token_pieces,
    world_secrets,
)


async def test_app_only_acquisitions_are_spans_with_the_client_credentials_grant(
    grpc_obo_authority: DevAuthority, recorder: Recorder
) -> None:
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    app = grpc_obo.AppOnly(
        confidential_client(grpc_obo_authority, "daemon"),
        retry=FAST_RETRY,
        telemetry=recorder.telemetry(),
    )
    try:
        with recorder.tracer(ORIGINAL).start_as_current_span("app.job") as job:
            first = await app.acquire([scope], timeout=10)
            second = await app.acquire([scope], timeout=10)
    finally:
        await app.close()

    acquires = recorder.named(SPAN_ACQUIRE)
    assert [attrs(a)["grpc_obo.token.source"] for a in acquires] == ["authority", "cache"]
    for acquire in acquires:
        assert attrs(acquire)["grpc_obo.grant"] == "client_credentials"
        assert attrs(acquire)["grpc_obo.scopes"] == (scope,)
        assert is_child(acquire, recorder.one("app.job"))
        # An application acts as itself: no user identity to put anywhere.
        assert not any(k.startswith("grpc_obo.user") for k in attrs(acquire))
    assert job.is_recording() is False
    requests = recorder.named(SPAN_AUTHORITY)
    assert requests and all(is_child(r, acquires[0]) for r in requests)
    assert {
        frozenset(dict(p.attributes or {}).items()): p.count
        for p in recorder.metric_points("grpc_obo.obo.duration")
    } == {
        frozenset(
            {("grpc_obo.token.source", "authority"), ("grpc_obo.grant", "client_credentials")}
        ): 1,
        frozenset(
            {("grpc_obo.token.source", "cache"), ("grpc_obo.grant", "client_credentials")}
        ): 1,
    }
    forbidden = {
        "eyJ": "eyJ",
        **world_secrets(grpc_obo_authority),
        **token_pieces(first.reveal()),
        **{f"second {k}": v for k, v in token_pieces(second.reveal()).items()},
    }
    assert find_leaks(forbidden, recorder.spans(), recorder.reader.get_metrics_data()) == []
