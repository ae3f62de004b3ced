"""Start the dev authority and the three example APIs as separate processes, and stop them.

`make demo` and the end-to-end tests use it. Each process gets a new session (Ctrl-C reaches the
demo alone, which then stops the processes in order: Workspace, store, vault, authority) and a
stdin pipe it exits on when closed, so none outlives its parent, even a killed one. Every wait
is bounded; a process that fails to start is reported with what it printed.

Every hop is TLS: each API serves the certificate the authority issued it and trusts the
authority's CA for the next hop, and so does a client app (`ChainProcesses.channel`).
`plaintext_loopback=True` is the explicit opt-out (each API then logs a warning).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from examples.settings import Settings

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CONTROL_TIMEOUT = 10.0
SERVICES = ("vault", "store", "workspace")  # started in this order: each calls the one before
MODULES = {
    "vault": "examples.vault",
    "store": "examples.downstream",
    "workspace": "examples.original",
}
_SERVING = re.compile(r"^\w+: serving on (\S+) \((.+)\)")
# Inherited from whoever runs the demo, these would change how the APIs serve: never passed on.
_TRANSPORT_VARIABLES = ("PLAINTEXT_LOOPBACK", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE")


class StartError(RuntimeError):
    """A process exited or stayed silent instead of starting."""


@dataclass
class Child:
    """One process, its output collected line by line by a reader thread."""

    name: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, name: str, argv: list[str], env: Mapping[str, str], cwd: Path) -> Child:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        child = cls(name, process)
        child._reader = threading.Thread(target=child._read, name=f"{name}-output", daemon=True)
        child._reader.start()
        return child

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The next output line matching `pattern`; StartError on exit or after `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise StartError(f"{self.name} exited ({self.process.wait()}):\n{self.output()}")
            if found := pattern.search(line):
                return found
        raise StartError(
            f"{self.name} said nothing expected within {timeout:.0f} s:\n{self.output()}"
        )

    def output(self) -> str:
        return "\n".join(f"  {self.name}| {line}" for line in self.lines[-40:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`; the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)  # it ends at the end of the output
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return self.process.returncode


@dataclass
class Authority(Child):
    """The dev authority process and its control line (see examples/authority.py)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)

    def control(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            found = self.next_line(re.compile(r"^\{.*\"ok\".*\}$"), CONTROL_TIMEOUT)
        answer: dict[str, Any] = json.loads(found.group(0))
        if not answer.get("ok"):
            raise RuntimeError(f"authority control {command}: {answer.get('error')}")
        return answer

    def count(self, **filters: Any) -> int:
        return int(self.control(op="count", **filters)["count"])


@dataclass
class ChainProcesses:
    settings: Settings
    authority: Authority
    services: dict[str, Child]
    addresses: dict[str, str]
    spans_files: list[Path]
    tls: bool = True
    """Every API serves TLS with a certificate from the authority (False: PLAINTEXT_LOOPBACK)."""

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What a client app of the chain connects with: trust in the authority's CA (which
        signed every API's certificate), or None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(Path(self.settings.ca_file).read_bytes())

    def channel(self, address: str) -> grpc.aio.Channel:
        """A client app's channel to one of the APIs (`self.workspace`, `self.store`)."""
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(address)
        return grpc.aio.secure_channel(address, credentials)

    @property
    def workspace(self) -> str:
        return self.addresses["workspace"]

    @property
    def store(self) -> str:
        return self.addresses["store"]

    def stop_services(self) -> dict[str, int]:
        """Stop the APIs, the Workspace first (their spans are all written afterwards)."""
        return {
            name: self.services[name].stop() for name in reversed(SERVICES) if name in self.services
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _python_env(base: Mapping[str, str], root: Path) -> dict[str, str]:
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), base.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def running_chain(
    workdir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    service_name_prefix: str = "grpc-obo",
    plaintext_loopback: bool = False,
) -> Iterator[ChainProcesses]:
    """The authority and the three APIs as processes on free loopback ports, stopped on exit.

    `workdir` receives the authority's JSON document and each process's spans (JSON lines).
    Every API serves and calls over TLS with the certificate the authority issued it (written
    in the authority's private temporary directory, gone when it stops);
    `plaintext_loopback=True` runs them without TLS instead (PLAINTEXT_LOOPBACK=1).
    """
    root = Path(__file__).resolve().parent.parent
    inherited = os.environ if environ is None else environ
    base = _python_env({k: v for k, v in inherited.items() if k not in _TRANSPORT_VARIABLES}, root)
    started: list[Child] = []
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        env_file = workdir / "authority.json"
        authority = Authority.start(
            "authority",
            [sys.executable, "-m", "examples.authority", "--write-env", str(env_file)],
            base,
            root,
        )
        started.append(authority)
        authority.next_line(re.compile(r'^\{"ready": true'), START_TIMEOUT)
        settings = Settings.load(env_file)
        # Ports picked first, so the three start together (each takes a second or two to
        # import): a middle tier's channel connects on its first call, not at start.
        addresses = {name: f"127.0.0.1:{_free_port()}" for name in SERVICES}
        services: dict[str, Child] = {}
        spans: list[Path] = []
        previous: str | None = None
        for name in SERVICES:
            env = {
                **base,
                **settings.service_env(
                    name,
                    listen=addresses[name],
                    next_address=previous,
                    plaintext_loopback=plaintext_loopback,
                ),
                "SPANS_FILE": str(workdir / f"{name}.spans.jsonl"),
                "OTEL_SERVICE_NAME": f"{service_name_prefix}-{name}",
                "STOP_ON_STDIN_EOF": "1",
            }
            spans.append(workdir / f"{name}.spans.jsonl")
            child = Child.start(name, [sys.executable, "-m", MODULES[name]], env, root)
            started.append(child)
            services[name] = child
            previous = addresses[name]
        expected = "plaintext, loopback only" if plaintext_loopback else "TLS"
        for name, child in services.items():
            serving, transport = child.next_line(_SERVING, START_TIMEOUT).groups()
            if serving != addresses[name]:
                raise StartError(f"{name} serves on {serving}, not {addresses[name]}")
            if transport != expected:
                raise StartError(f"{name} serves {transport}, not {expected}")
        yield ChainProcesses(
            settings, authority, services, addresses, spans, tls=not plaintext_loopback
        )
    finally:
        for child in reversed(started):
            child.stop()
