"""grpc's own metadata limit comes before `max_token_bytes` (the README's note, pinned here).

grpcio refuses request metadata above `grpc.max_metadata_size` (8 KiB soft limit: refused with a
growing probability) and `grpc.absolute_max_metadata_size` (16 KiB hard limit) with
RESOURCE_EXHAUSTED, before any interceptor sees the token. With the server options the README
gives, a large token reaches grpc_obo, whose own `max_token_bytes` then decides.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest

import grpc_obo
from grpc_obo import TokenValidator
from tests.validation.conftest import REPO_ROOT
from tests.validation.tokens import mint, v2_claims

RAISED = [("grpc.max_metadata_size", 64 * 1024), ("grpc.absolute_max_metadata_size", 64 * 1024)]
"""What the README tells a server (and a client channel, for what it receives) to set."""


def server_guide_note() -> str:
    """The server guide's paragraph on token size (the README links to the guide)."""
    text = (REPO_ROOT / "docs" / "guides" / "server.md").read_text(encoding="utf-8")
    return next(p for p in re.split(r"\n\s*\n", text) if "max_token_bytes" in p)


def test_the_server_guide_says_grpc_refuses_large_metadata_first_and_how_to_raise_it() -> None:
    note = server_guide_note()
    for needed in ("RESOURCE_EXHAUSTED", "8 KiB", "16 KiB", *(name for name, _ in RAISED)):
        assert needed in note, f"{needed!r} missing from the server guide's max_token_bytes note"


@pytest.fixture
async def served(
    make_validator: Callable[..., TokenValidator],
) -> AsyncIterator[Callable[..., Any]]:
    """`await start(options)`: a grpc.aio server with grpc_obo's interceptor; its channel."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []
    validator = make_validator()

    # Named like the method, as generated servicer code is: grpc_obo then knows no
    # `requires` rule hides behind it (the suite marks other handlers with `requires`).
    async def Say(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def start(options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        server = grpc.aio.server(
            interceptors=[grpc_obo.server_interceptor(validator)], options=list(options)
        )
        handler = grpc.unary_unary_rpc_method_handler(Say)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Echo", {"Say": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(options))
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    method = channel.unary_unary("/t.Echo/Say")
    try:
        await method(b"hi", metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_with_the_readme_options_large_tokens_reach_grpc_obo(
    served: Callable[..., Any],
) -> None:
    large = mint(v2_claims(pad="x" * 9000))  # over grpc's 8 KiB soft limit, within ours
    huge = mint(v2_claims(pad="x" * 20000))  # over grpc's 16 KiB hard limit and ours
    assert 8 * 1024 < len(large) < 16 * 1024 < len(huge)

    defaults = await served(())
    assert await call(defaults, huge) == grpc.StatusCode.RESOURCE_EXHAUSTED  # grpc's refusal

    raised = await served(RAISED)
    assert [await call(raised, large) for _ in range(20)] == [grpc.StatusCode.OK] * 20
    # grpc_obo's own limit now decides: an invalid token, not a resource problem.
    assert await call(raised, huge) == grpc.StatusCode.UNAUTHENTICATED
