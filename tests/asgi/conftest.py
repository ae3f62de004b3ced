"""A real ASGI server (uvicorn on loopback) for the front door tests; httpx is the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

# The Original API's validator and credential, as in the HTTP downstream tests.
from tests.http.conftest import (  # noqa: F401
    client,
    downstream_validator,
    original_validator,
)


@contextlib.asynccontextmanager
async def served(app: Any, *, ws: str = "auto") -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port); yield its base URL.

    `ws`: uvicorn's websocket implementation ("websockets-sansio" offers the ASGI websocket denial
    response extension, "wsproto" does not).
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws=ws
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):  # bounded: 10 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
