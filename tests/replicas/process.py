"""A child process driven by JSON lines: its config and commands on stdin, answers on stdout,
its stderr in a log file. Used by the replica tests and the soak (tests/soak/).

`await start_process("tests.replicas.replica", config, log)` starts `python -m <module>` in the
repository root and sends `config` as the first line; `Replica` sends commands, reads answers,
kills (SIGKILL) or stops it (`{"cmd": "exit"}`, then SIGKILL after 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """One replica process: send it commands, read its JSON answers, kill it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()

    async def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"replica exited; its stderr:\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        """SIGKILL: no finally block, no lease released, no goodbye to Redis."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"cmd": "exit"})
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.process.wait()


async def start_process(module: str, config: dict[str, Any], log: Path) -> Replica:
    """`python -m module` (cwd: the repository root), stderr to `log`, `config` sent."""
    with log.open("ab") as stderr:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    replica = Replica(process, log)
    try:
        await replica.send(config)
    except BaseException:
        replica.kill()
        await process.wait()
        raise
    return replica
