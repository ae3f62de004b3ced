"""The metadata handed from intercept_service to the handler is used only by the same task, once."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_obo import _server


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata
        self.asked = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self.asked += 1
        return self.metadata


HANDED = (("authorization", "Bearer handed"),)
OWN = (("authorization", "Bearer own"),)


async def test_the_same_task_uses_the_handed_metadata_once() -> None:
    _server._call_metadata.set((asyncio.current_task(), HANDED))
    context: Any = Context(OWN)
    assert _server._metadata_of(context) == HANDED
    assert context.asked == 0
    # Read once: a second look (a later step in the same task) asks the context itself.
    assert _server._metadata_of(context) == OWN
    assert context.asked == 1


async def test_another_task_never_uses_metadata_handed_to_this_one() -> None:
    _server._call_metadata.set((asyncio.current_task(), HANDED))
    context: Any = Context(OWN)
    # A task created now inherits the value (contexts are copied) but is not the task it names.
    seen = await asyncio.create_task(_other(context))
    assert seen == OWN
    _server._call_metadata.set(None)


async def _other(context: Any) -> Any:
    return _server._metadata_of(context)
