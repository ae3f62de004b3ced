"""The verified caller as the demo's `Caller` message: what each example API reports it saw."""

from __future__ import annotations

import grpc_obo
from examples.gen.demo.v1 import demo_pb2


def caller() -> demo_pb2.Caller:
    """Who is calling, as the validated token says (the interceptor sets it for the handler)."""
    identity = grpc_obo.current_identity()
    if identity is None:  # only on a public method; the examples have none
        raise grpc_obo.MissingIdentityError("no verified caller")
    return demo_pb2.Caller(
        oid=identity.oid or "",
        tid=identity.tid,
        client_id=identity.client_id or "",
        scopes=sorted(identity.scopes),
        name=identity.name or "",
    )
