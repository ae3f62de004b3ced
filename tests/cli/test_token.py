"""`grpc-obo token`: the dev authority's users by password (from the --write-env file), and the
device code flow end to end (the sign-in page, as a person would use it), with the real-tenant
flags pointed at the dev authority. Output: the token alone, `export VAR=...` or JSON; refusals
and outages map to exit codes 1 and 4; no secret or password is ever printed."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from typing import Any

import jwt
import requests

from tests.cli.conftest import RUN_TIMEOUT, CliAuthority, assert_no_secret, clean_env, run

JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def dev_token(cli: CliAuthority, *args: str) -> Any:
    return cli.run("token", "--dev-authority", "dev.json", *args)


def test_prints_just_the_token(cli_authority: CliAuthority) -> None:
    result = dev_token(cli_authority, "--user", "alice", "--scope", "orders/Orders.Read")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert JWT.match(token) and result.stdout == token + "\n"
    claims = claims_of(token)
    alice = cli_authority.user("alice")
    assert (claims["oid"], claims["scp"]) == (alice["oid"], "Orders.Read")
    assert claims["aud"] == cli_authority.app("orders")["client_id"]
    assert claims["azp"] == cli_authority.app("web")["client_id"]  # the only public client
    assert token not in result.stderr


def test_env_prints_an_export_line_for_eval(cli_authority: CliAuthority) -> None:
    scope = f"{cli_authority.app('orders')['app_id_uri']}/Orders.Read"
    result = dev_token(
        cli_authority, "--user", "bob", "--scope", scope, "--client", "web", "--env", "TOKEN"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("export TOKEN=")
    shell = subprocess.run(  # a shell script's view: eval, then use $TOKEN
        ["/bin/sh", "-c", 'eval "$1"; printf %s "$TOKEN"', "sh", result.stdout],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    assert claims_of(shell.stdout)["oid"] == cli_authority.user("bob")["oid"]
    bad = dev_token(cli_authority, "--user", "bob", "--scope", scope, "--env", "1NOPE")
    assert bad.returncode == 2 and "not a shell variable name" in bad.stderr


def test_json_output(cli_authority: CliAuthority) -> None:
    before = int(time.time())
    result = dev_token(cli_authority, "--user", "carol", "--scope", "orders/Orders.Read", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"access_token", "token_type", "expires_in", "expires_on", "scope"}
    assert body["token_type"] == "Bearer"
    assert before + 590 <= body["expires_on"] <= int(time.time()) + 600
    carol = cli_authority.user("carol")
    # carol lives in the second tenant: the token comes from her tenant's authority.
    assert claims_of(body["access_token"])["tid"] == carol["tenant_id"]


def test_refusals_and_bad_input_have_their_exit_codes(cli_authority: CliAuthority) -> None:
    unknown_api = dev_token(cli_authority, "--user", "alice", "--scope", "api://nowhere/Read")
    assert unknown_api.returncode == 1
    assert "invalid_resource AADSTS500011" in unknown_api.stderr
    not_consented = dev_token(cli_authority, "--user", "alice", "--scope", "orders/Orders.Write")
    assert not_consented.returncode == 1 and "AADSTS65001" in not_consented.stderr
    nobody = dev_token(cli_authority, "--user", "mallory", "--scope", "orders/Orders.Read")
    assert nobody.returncode == 3 and "no user 'mallory'" in nobody.stderr
    no_user = dev_token(cli_authority, "--scope", "orders/Orders.Read")
    assert no_user.returncode == 3 and "--user" in no_user.stderr
    missing = cli_authority.run("token", "--dev-authority", "nope.json", "--scope", "x")
    assert missing.returncode == 3 and "nope.json: cannot be read" in missing.stderr
    usage = cli_authority.run("token", "--dev-authority", "dev.json")
    assert usage.returncode == 2 and "--scope" in usage.stderr
    for result in (unknown_api, not_consented, nobody, no_user):
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_unreachable_authority_is_exit_4(tmp_path: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run(
        "token",
        "--tenant",
        "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001",
        "--client-id",
        "b1e0f1c8-2a3d-4e5f-9a8b-0c0ffee0c1c1",
        "--authority-host",
        f"https://127.0.0.1:{port}",
        "--http-timeout",
        "2",
        "--scope",
        "api://x/y",
    )
    assert result.returncode == 4, result.stderr
    assert "unreachable" in result.stderr


def _device_flow(cli: CliAuthority, *args: str, user: str = "alice") -> tuple[int, str, str]:
    """Run `token` with a device code flow; sign in on the page the way a person would."""
    process = subprocess.Popen(
        [sys.executable, "-m", "grpc_obo._cli", "token", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=cli.directory,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the sign-in instructions come first
        found = re.search(r"open the page (\S+) and enter the code (\S+) ", line)
        assert found, line
        page, code = found.groups()
        assert page == f"{cli.document['authority_host']}/devicelogin"
        person = cli.user(user)
        with requests.Session() as browser:
            browser.trust_env = False
            browser.verify = cli.document["ca_file"]
            form = browser.get(page, timeout=RUN_TIMEOUT)
            assert 'name="code"' in form.text
            answer = browser.post(
                page,
                data={"code": code, "username": person["username"], "password": person["password"]},
                timeout=RUN_TIMEOUT,
            )
            assert answer.status_code == 200, answer.text
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, line + err


def test_device_code_against_any_tenant_end_to_end(cli_authority: CliAuthority) -> None:
    """The real-tenant path (--tenant, --client-id, --authority-host as a bare host,
    --ca-file), served by the dev authority's device code grant and sign-in page."""
    doc = cli_authority.document
    host = doc["authority_host"].removeprefix("https://")
    code, out, err = _device_flow(
        cli_authority,
        "--tenant",
        doc["tenant_id"],
        "--client-id",
        cli_authority.app("web")["client_id"],
        "--authority-host",
        host,
        "--ca-file",
        doc["ca_file"],
        "--scope",
        f"{cli_authority.app('orders')['app_id_uri']}/Orders.Read",
        "--timeout",
        "20",
    )
    assert code == 0, err
    claims = claims_of(out.strip())
    assert claims["oid"] == cli_authority.user("alice")["oid"]
    assert claims["scp"] == "Orders.Read"
    assert_no_secret([out, err], cli_authority.secrets)


def test_device_code_with_the_dev_file(cli_authority: CliAuthority) -> None:
    code, out, err = _device_flow(
        cli_authority,
        "--dev-authority",
        "dev.json",
        "--device-code",
        "--scope",
        "orders/Orders.Read",
        "--json",
        user="bob",
    )
    assert code == 0, err
    assert claims_of(json.loads(out)["access_token"])["oid"] == cli_authority.user("bob")["oid"]
    assert_no_secret([out, err], cli_authority.secrets)


def test_device_code_without_a_sign_in_times_out_with_exit_4(cli_authority: CliAuthority) -> None:
    result = dev_token(
        cli_authority, "--device-code", "--scope", "orders/Orders.Read", "--timeout", "1"
    )
    assert result.returncode == 4, result.stderr
    assert "enter the code" in result.stderr and "no sign-in before --timeout" in result.stderr
    assert result.stdout == ""
