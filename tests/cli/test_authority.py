"""`grpc-obo authority`: a world file, the JSON document (--write-env) and per-app dotenv files
(--write-dotenv, azure-identity's names) that another process uses with nothing else, the CA
kept in --state-dir across restarts, secrets on stdout only with --print-secrets, SIGTERM."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import jwt

from tests.cli.conftest import (
    RUN_TIMEOUT,
    WORLD,
    CliAuthority,
    assert_no_secret,
    clean_env,
    run,
    secrets_of,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_and_stdout_masks_secrets(tmp_path: Path) -> None:
    result = run(
        "authority",
        "--world",
        str(WORLD),
        "--write-env",
        "dev.json",
        "--write-dotenv",
        "env",
        "--state-dir",
        "state",
        "--serve-seconds",
        "0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "dev.json").read_text())
    secrets = secrets_of(written)
    assert_no_secret([result.stdout, result.stderr], secrets)
    shown = json.loads(result.stdout)
    assert shown["apps"]["orders"]["secrets"] == ["**********"]
    assert shown["users"]["alice"]["password"] == "**********"
    assert shown["apps"]["orders"]["client_id"] == written["apps"]["orders"]["client_id"]
    assert shown["env"] == str(tmp_path / "dev.json")
    assert shown["state_dir"] == str(tmp_path / "state")
    assert set(shown["env_files"]) == {"web", "orders", "inventory", "warehouse", "auditor"}
    assert _mode(tmp_path / "dev.json") == 0o600
    for path in (tmp_path / "env").iterdir():
        assert _mode(path) == 0o600, path
    orders = (tmp_path / "env" / "orders.env").read_text()
    assert f"AZURE_CLIENT_SECRET={written['apps']['orders']['secrets'][0]}" in orders
    assert f"GRPC_OBO_CA_FILE={tmp_path / 'state' / 'ca.pem'}" in orders
    web = (tmp_path / "env" / "web.env").read_text()
    assert "AZURE_CLIENT_SECRET" not in web  # a public client
    assert f"GRPC_OBO_SCOPES_ORDERS={written['apps']['orders']['app_id_uri']}/Orders.Read" in web
    # Paths are absolute: the files serve processes started anywhere.
    assert Path(written["ca_file"]).is_absolute()


def test_print_secrets_shows_them_when_asked(tmp_path: Path) -> None:
    result = run(
        "authority", "--print-secrets", "--state-dir", str(tmp_path), "--serve-seconds", "0"
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert len(shown["apps"]["original"]["secrets"][0]) == 40  # the demo world by default
    assert shown["users"]["alice"]["password"] != "**********"


def test_the_state_dir_keeps_the_ca_across_restarts(tmp_path: Path) -> None:
    args = ("authority", "--state-dir", str(tmp_path / "state"), "--serve-seconds", "0")
    first = run(*args)
    assert first.returncode == 0, first.stderr
    ca = (tmp_path / "state" / "ca.pem").read_bytes()
    second = run(*args)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "state" / "ca.pem").read_bytes() == ca
    assert _mode(tmp_path / "state" / "ca-key.pem") == 0o600
    # Client certificates belong to one run: removed at stop, unlike the CA.
    assert sorted(p.name for p in (tmp_path / "state").glob("*.pem")) == ["ca-key.pem", "ca.pem"]
    assert json.loads(second.stdout)["ca_file"] == str(tmp_path / "state" / "ca.pem")


def test_the_default_state_dir_is_under_xdg_state_home(tmp_path: Path) -> None:
    result = run(
        "authority",
        "--serve-seconds",
        "0",
        env=clean_env(XDG_STATE_HOME=str(tmp_path / "xdg")),
    )
    assert result.returncode == 0, result.stderr
    expected = tmp_path / "xdg" / "grpc-obo" / "authority"
    assert json.loads(result.stdout)["state_dir"] == str(expected)
    assert (expected / "ca.pem").is_file()


def test_a_broken_world_file_is_exit_3_naming_the_field(tmp_path: Path) -> None:
    world = tmp_path / "world.toml"
    world.write_text(
        '[apps.api]\nscopes = ["Read"]\n[[users]]\nusername = "x@y.z"\npasword = "pw-x"\n'
    )
    result = run("authority", "--world", str(world), "--state-dir", str(tmp_path))
    assert result.returncode == 3
    assert "world.toml: users[0].pasword: unknown field (did you mean 'password'?)" in result.stderr
    assert "pw-x" not in result.stderr and "Traceback" not in result.stderr


def test_a_taken_port_is_exit_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("authority", "--port", str(port), "--state-dir", str(tmp_path))
    assert result.returncode == 3
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr


def test_check_runs_the_self_check_first(tmp_path: Path) -> None:
    result = run("authority", "--check", "--state-dir", str(tmp_path), "--serve-seconds", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("[ok  ]") == 4 and "FAIL" not in result.stderr
    other = run("authority", "--check", "--world", str(WORLD), "--state-dir", str(tmp_path))
    assert other.returncode == 3 and "demo world" in other.stderr


def test_token_lifetime_sets_the_tokens_lifetime(cli_authority: CliAuthority) -> None:
    result = cli_authority.run(
        "token", "--dev-authority", "dev.json", "--user", "bob", "--scope", "orders/Orders.Read"
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    import grpc_obo

    async def main():
        token = sys.stdin.read().strip()
        # Both read the environment the dotenv file set: nothing else is configured.
        options = grpc_obo.ValidatorOptions.from_env()
        async with grpc_obo.TokenValidator(options) as validator:
            me = await validator.validate(token)
        print("validated", me.principal, sorted(me.scopes))
        scope, = os.environ["GRPC_OBO_SCOPES_INVENTORY"].split()
        async with grpc_obo.OnBehalfOf(grpc_obo.ConfidentialClient.from_env()) as obo:
            exchanged = await obo.acquire([scope], identity=me)
        inventory = grpc_obo.ValidatorOptions.from_env(dict(a.split("=", 1) for a in sys.argv[1:]))
        async with grpc_obo.TokenValidator(inventory) as validator:
            them = await validator.validate(exchanged.reveal())
        print("exchanged", them.principal, sorted(them.scopes), them.client_id)

    asyncio.run(main())
    """
)


def test_a_dotenv_file_configures_both_sides_in_another_process(
    cli_authority: CliAuthority,
) -> None:
    """`set -a; . env/orders.env` and nothing else: ValidatorOptions.from_env() validates the
    user's token for orders, ConfidentialClient.from_env() exchanges it On-Behalf-Of for
    inventory, and inventory's dotenv validates the result."""
    token = cli_authority.run(
        "token", "--dev-authority", "dev.json", "--user", "carol", "--scope", "orders/Orders.Read"
    ).stdout.strip()
    scope = f"{cli_authority.app('inventory')['app_id_uri']}/Stock.Read"
    assert cli_authority.dotenv("orders")["GRPC_OBO_SCOPES_INVENTORY"] == scope
    inventory_env = [f"{k}={v}" for k, v in cli_authority.dotenv("inventory").items()]
    script = cli_authority.directory / "child.py"
    script.write_text(CHILD)
    command = 'set -a; . ./env/orders.env; set +a; exec "$0" child.py "$@"'
    result = subprocess.run(
        ["/bin/sh", "-c", command, sys.executable, *inventory_env],
        input=token,
        capture_output=True,
        text=True,
        cwd=cli_authority.directory,
        env=clean_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    carol = cli_authority.user("carol")
    principal = f"{carol['tenant_id']}/{carol['oid']}"
    assert result.stdout.splitlines() == [
        f"validated {principal} ['Orders.Read']",
        f"exchanged {principal} ['Stock.Read'] {cli_authority.app('orders')['client_id']}",
    ]
    assert_no_secret([result.stdout, result.stderr, token], cli_authority.secrets)


def test_a_state_dir_open_to_others_is_exit_3(tmp_path: Path) -> None:
    """A CA planted in a directory others can write would be trusted by every client."""
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o777)
    result = run("authority", "--state-dir", str(state), "--serve-seconds", "0")
    assert result.returncode == 3, result.stderr
    assert "writable by others" in result.stderr and "Traceback" not in result.stderr
    assert not (state / "ca-key.pem").exists()
    fresh = tmp_path / "fresh" / "state"
    assert run("authority", "--state-dir", str(fresh), "--serve-seconds", "0").returncode == 0
    assert _mode(fresh) == 0o700
