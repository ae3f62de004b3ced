"""The verified caller, as the example APIs use it: who they report they saw, whose data it is.

The user is the `tid` + `oid` of the token the API validated itself (`current_identity()`, set
by grpc_obo's server interceptor); a request never says who the user is.
"""

from __future__ import annotations

import grpc

import grpc_obo
from examples.gen.workspace.v1 import common_pb2

NOT_THE_OWNER = "documents are served to their owner only, and the owner is the signed-in user"


def identity() -> grpc_obo.Identity:
    """The verified caller (every method of the examples needs a token)."""
    found = grpc_obo.current_identity()
    if found is None:  # only on a public method; the examples have none
        raise grpc_obo.MissingIdentityError("no verified caller")
    return found


def owner() -> str:
    """Whose data this call may touch: `tid/oid`, from the token alone."""
    caller = identity()
    return f"{caller.tid}/{caller.oid}"


def seen(service: str) -> common_pb2.Seen:
    """What this API saw of its caller, for the response's trail."""
    caller = identity()
    return common_pb2.Seen(
        service=service,
        oid=caller.oid or "",
        tid=caller.tid,
        client_id=caller.client_id or "",
        scopes=sorted(caller.scopes),
    )


async def refuse_other_owner(claimed: str, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
    """A request field naming a user is never trusted: only the caller's own name passes."""
    if claimed and claimed != owner():
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, NOT_THE_OWNER)
