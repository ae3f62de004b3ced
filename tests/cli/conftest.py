"""The `grpc-obo` command, run as a subprocess as users run it.

One authority process serves the module's tests: the README's three-API world
(docs/world.example.toml), with --write-env, --write-dotenv and --state-dir in a temporary
directory, stopped with SIGTERM at the end (it must exit 0). Every run's output is searched for
every secret and password of that world: none may appear unless the run asked for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORLD = REPO / "docs" / "world.example.toml"
RUN_TIMEOUT = 30.0
"""Seconds any one command may take: a hang fails the test, it does not stall the suite."""


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without Azure or grpc_obo settings (and ~ kept out)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "GRPC_OBO_", "MSAL_")) and k != "PYTHONWARNINGS"
    }
    env.update(extra)
    return env


def run(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """`grpc-obo ARGS...` in a fresh interpreter; stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "grpc_obo._cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def secrets_of(document: dict[str, Any]) -> list[str]:
    """Every client secret and user password in a --write-env document."""
    found = [s for app in document["apps"].values() for s in app["secrets"]]
    found += [user["password"] for user in document["users"].values()]
    assert found and all(len(s) >= 8 and "*" not in s for s in found)
    return found


def assert_no_secret(texts: Iterable[str], secrets: Sequence[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a secret or password was printed"


@dataclass
class CliAuthority:
    """The authority process and the files it wrote."""

    process: subprocess.Popen[str]
    directory: Path
    env_file: Path
    dotenv_dir: Path
    state_dir: Path
    document: dict[str, Any]
    outputs: list[str] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return secrets_of(self.document)

    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.document["apps"][name]
        return app

    def user(self, name: str) -> dict[str, Any]:
        user: dict[str, Any] = self.document["users"][name]
        return user

    def dotenv(self, app: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for line in (self.dotenv_dir / f"{app}.env").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                values[name] = value
        return values

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command and keep its output for the session's secret search."""
        result = run(*args, cwd=self.directory, **kwargs)
        self.outputs += [result.stdout, result.stderr]
        return result


def start_authority(directory: Path, *extra: str) -> CliAuthority:
    env_file, dotenv_dir, state_dir = directory / "dev.json", directory / "env", directory / "state"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grpc_obo._cli",
            "authority",
            "--world",
            str(WORLD),
            "--write-env",
            str(env_file),
            "--write-dotenv",
            str(dotenv_dir),
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=directory,
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    # The file is written atomically (renamed into place): present means complete.
    while not env_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _out, err = process.communicate()
            pytest.fail(f"grpc-obo authority did not start (rc={process.returncode}): {err}")
        time.sleep(0.05)
    document = json.loads(env_file.read_text())
    return CliAuthority(process, directory, env_file, dotenv_dir, state_dir, document)


def stop_authority(authority: CliAuthority) -> tuple[int, str, str]:
    authority.process.send_signal(signal.SIGTERM)
    try:
        out, err = authority.process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        authority.process.kill()
        out, err = authority.process.communicate()
    return authority.process.returncode, out, err


@pytest.fixture(scope="module")
def cli_authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliAuthority]:
    """`grpc-obo authority` with the README's world, for a module's tests."""
    authority = start_authority(tmp_path_factory.mktemp("cli"), "--token-lifetime", "600")
    try:
        yield authority
    finally:
        code, out, err = stop_authority(authority)
        assert code == 0, err
        assert "serving at" in err
        # Every run of the module, and the authority's own output: no secret unless asked.
        assert_no_secret([out, err, *authority.outputs], authority.secrets)
