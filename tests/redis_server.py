"""A real Redis for tests: REDIS_URL when set, else a private `redis-server` on a free port.

Reusable outside this suite (meant to move into `grpc_obo.testing`): `redis_server()` is a
context manager yielding a `redis://` URL. A missing `redis-server` binary is a failure with a
clear message, never a skip: Redis-backed behaviour must not go untested silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

__all__ = ["RedisServerError", "redis_server"]

_START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """No Redis could be provided for the tests."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_ping(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisServerError(f"redis-server exited early with code {process.returncode}")
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
        try:
            if client.ping():
                return
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
        finally:
            client.close()
    raise RedisServerError(f"redis-server did not answer PING within {_START_TIMEOUT:.0f} s")


@contextlib.contextmanager
def redis_server(*, env_var: str = "REDIS_URL") -> Iterator[str]:
    """Yield the URL of a running Redis; stop it afterwards if this function started it."""
    configured = os.environ.get(env_var)
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerError(
            "redis-server is not installed and REDIS_URL is not set: "
            "run `make redis-server` (or apt-get install redis-server), or point REDIS_URL "
            "at a Redis you may flush"
        )
    with tempfile.TemporaryDirectory(prefix="grpc-obo-redis-") as workdir:
        # NOTE: a port picked then released can be taken by someone else before redis binds it;
        # retry a few times rather than fail the whole session on that race.
        for _attempt in range(3):
            port = _free_port()
            url = f"redis://127.0.0.1:{port}/0"
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_for_ping(url, process)
            except RedisServerError:
                _stop(process)
                continue
            try:
                yield url
            finally:
                _stop(process)
            return
        raise RedisServerError("could not start redis-server on a free port")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
