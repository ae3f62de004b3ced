"""The docs' "A world of your own" (docs/guides/dev-authority.md), followed as a newcomer
would, every piece a process: `grpc-obo authority` with docs/world.example.toml, three APIs
(docs/chain.py) each configured by sourcing its own `env/<app>.env` and nothing else, a user's
token from `grpc-obo token --env`, and a call through the chain: orders -> inventory ->
warehouse, two On-Behalf-Of hops."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, RUN_TIMEOUT, CliAuthority, assert_no_secret, clean_env

CHAIN = REPO / "docs" / "chain.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sh(command: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["/bin/sh", "-c", command, "sh", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHON=sys.executable, CHAIN=str(CHAIN)),
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def chain(cli_authority: CliAuthority) -> Iterator[tuple[str, list[str]]]:
    """The three APIs as processes; yields the first one's address and, at the end, checks
    their output."""
    ports = {name: free_port() for name in ("orders", "inventory", "warehouse")}
    apis = [
        ("warehouse", "Bins.Read", ""),
        ("inventory", "Stock.Read", f"warehouse=127.0.0.1:{ports['warehouse']}"),
        ("orders", "Orders.Read", f"inventory=127.0.0.1:{ports['inventory']}"),
    ]
    processes = []
    outputs: list[str] = []
    try:
        for name, scope, next_hop in apis:
            command = f'set -a; . ./env/{name}.env; set +a; exec "$PYTHON" "$CHAIN" serve "$@"'
            args = [name, str(ports[name]), scope, *([next_hop] if next_hop else [])]
            processes.append(sh(command, cli_authority.directory, *args))
        for process, (name, _, _) in zip(processes, apis, strict=True):
            assert process.stdout is not None
            line = process.stdout.readline()  # empty if it died: then stderr says why
            if "serving" not in line:
                process.kill()
                pytest.fail(f"{name} did not start: {process.communicate()[1]}")
        yield f"127.0.0.1:{ports['orders']}", outputs
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                out, err = process.communicate(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            outputs += [out, err]
            assert process.returncode == 0, err
        assert_no_secret(outputs, cli_authority.secrets)


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_a_user_calls_through_three_apis(
    cli_authority: CliAuthority, chain: tuple[str, list[str]], user: str
) -> None:
    target, outputs = chain
    command = (
        'eval "$("$PYTHON" -m grpc_obo._cli token --dev-authority dev.json --user "$1" '
        '--scope orders/Orders.Read --env TOKEN)" && exec "$PYTHON" "$CHAIN" call "$2"'
    )
    caller = sh(command, cli_authority.directory, user, target)
    out, err = caller.communicate(timeout=RUN_TIMEOUT)
    outputs += [out, err]
    assert caller.returncode == 0, err
    found = cli_authority.user(user)
    who = f"{found['username']} {found['tenant_id']}/{found['oid']}"
    ids = {name: cli_authority.app(name)["client_id"] for name in ("web", "orders", "inventory")}
    assert out.splitlines() == [
        f"orders: {who} via {ids['web']}",
        f"inventory: {who} via {ids['orders']}",
        f"warehouse: {who} via {ids['inventory']}",
    ]
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.", out + err)  # no token printed on the way


def test_a_token_for_another_api_is_refused_at_the_first_hop(
    cli_authority: CliAuthority, chain: tuple[str, list[str]]
) -> None:
    target, outputs = chain
    command = (
        'TOKEN="$("$PYTHON" -m grpc_obo._cli token --dev-authority dev.json --user alice '
        '--scope orders/Orders.Write)"; export TOKEN; exec "$PYTHON" "$CHAIN" call "$1"'
    )
    caller = sh(command, cli_authority.directory, target)
    out, err = caller.communicate(timeout=RUN_TIMEOUT)
    outputs += [out, err]
    # orders/Orders.Write is not consented for web: no token, so the call goes out without one.
    assert caller.returncode != 0
    assert "AADSTS65001" in err and "UNAUTHENTICATED" in err


def test_the_docs_show_the_chain_script_itself() -> None:
    # The guide includes the file at build time (no copy to drift); the README links to it.
    guide = (REPO / "docs" / "guides" / "dev-authority.md").read_text(encoding="utf-8")
    assert "```{literalinclude} ../chain.py\n" in guide
