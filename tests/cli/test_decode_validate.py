"""`grpc-obo decode` (header and claims, marked UNVERIFIED, times as dates, no signature) and
`grpc-obo validate` (the Identity, or the refusal's class, reason and status; configured from the
dev authority's file, from the environment, or by flags); `--help` for every verb and option."""

from __future__ import annotations

import argparse
import base64
import json
import socket
import time

import pytest

from grpc_obo._cli import _parser
from tests.cli.conftest import CliAuthority, assert_no_secret, clean_env, run


@pytest.fixture(scope="module")
def token(cli_authority: CliAuthority) -> str:
    result = cli_authority.run(
        "token", "--dev-authority", "dev.json", "--user", "alice", "--scope", "orders/Orders.Read"
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- decode ---------------------------------------------------------------------------------------


def test_decode_shows_header_and_claims_unverified_with_dates(token: str) -> None:
    result = run("decode", stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("UNVERIFIED: the signature was not checked")
    assert "alg" in out and "RS256" in out and "preferred_username" in out
    assert "alice@contoso.example" in out
    signature = token.rsplit(".", 1)[1]
    assert signature not in out and token not in out and "bytes, not shown" in out
    exp_line = next(line for line in out.splitlines() if line.strip().startswith("exp "))
    assert " UTC (in " in exp_line and time.strftime("%Y-", time.gmtime()) in exp_line
    assert "not expired by this machine's clock" in out
    # As an argument, with a "Bearer " prefix (as copied from a header): the same token.
    as_argument = run("decode", "--json", f"Bearer {token}").stdout
    assert as_argument == run("decode", "--json", stdin=token).stdout


def test_decode_json(token: str) -> None:
    result = run("decode", "--json", "-", stdin=token)
    document = json.loads(result.stdout)
    assert document["verified"] is False
    assert document["header"]["alg"] == "RS256"
    assert document["claims"]["scp"] == "Orders.Read"
    assert document["dates"]["exp"].endswith("+00:00")
    assert token.rsplit(".", 1)[1] not in result.stdout


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not-a-token-at-all", "1 dot-separated parts"),
        ("a.b.c.d.e", "encrypted token (JWE)"),
        ("%%%.e30.sig", "header is not base64url JSON"),
        (base64.urlsafe_b64encode(b"[1]").decode() + ".e30.sig", "header is not a JSON object"),
        ("", "no token given"),
    ],
)
def test_decode_refuses_what_is_not_a_jwt_without_echoing_it(text: str, why: str) -> None:
    result = run("decode", stdin=text)
    assert result.returncode == 3
    assert why in result.stderr
    assert (not text) or text not in result.stderr
    assert "Traceback" not in result.stderr


def test_decode_shows_a_time_claim_no_date_can_hold_undated() -> None:
    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    token = f"{b64({'alg': 'RS256', 'kid': 'k'})}.{b64({'exp': 1e20, 'iat': 1e400})}.c2ln"
    result = run("decode", stdin=token)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "1e+20" in result.stdout


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_HEADER = _b64(b'{"alg":"RS256","kid":"k","typ":"JWT"}')
_PADDED = base64.urlsafe_b64encode(b'{"exp":10}').decode()
assert _PADDED.endswith("=")


@pytest.mark.parametrize(
    ("token", "claim", "reason"),
    [
        # `=` padding: decode reads it, the validator's strict base64url does not.
        (_HEADER + "." + _PADDED + ".c2ln", "exp", "bad_encoding"),
        # Duplicate keys: decode shows the last (as PyJWT would read it), the validator refuses.
        (_HEADER + "." + _b64(b'{"oid":"a","oid":"b"}') + ".c2ln", "oid", "bad_json"),
        (_b64(b'{"alg":"HS256","kid":"k"}') + "." + _b64(b'{"exp":1}') + ".c2ln", "exp", "bad_alg"),
    ],
    ids=["padding", "duplicate keys", "algorithm"],
)
def test_decode_says_when_the_validator_would_refuse_what_it_shows(
    token: str, claim: str, reason: str
) -> None:
    """Decoding is lenient (it shows what it can); the strict parser's verdict is said too."""
    result = run("decode", stdin=token)
    assert result.returncode == 0, result.stderr
    assert claim in result.stdout
    refusal = [line for line in result.stdout.splitlines() if "would refuse" in line]
    assert len(refusal) == 1
    assert refusal[0].startswith("the validator would refuse this token: ")
    assert refusal[0].endswith(f"({reason})")
    document = json.loads(run("decode", "--json", stdin=token).stdout)
    assert document["refused"]["reason"] == reason
    assert document["refused"]["message"] in refusal[0]


def test_decode_says_nothing_of_refusal_for_a_well_formed_token(token: str) -> None:
    assert "would refuse" not in run("decode", stdin=token).stdout
    assert json.loads(run("decode", "--json", stdin=token).stdout)["refused"] is None


# -- validate -------------------------------------------------------------------------------------


def test_validate_with_the_dev_file_prints_the_identity(
    cli_authority: CliAuthority, token: str
) -> None:
    result = cli_authority.run(
        "validate", "--dev-authority", "dev.json", "--api", "orders", stdin=token
    )
    assert result.returncode == 0, result.stderr
    alice = cli_authority.user("alice")
    assert result.stdout.startswith(f"accepted: user {alice['tenant_id']}/{alice['oid']}\n")
    assert "Orders.Read" in result.stdout and token not in result.stdout
    as_json = cli_authority.run(
        "validate", "--dev-authority", "dev.json", "--api", "orders", "--json", token
    )
    identity = json.loads(as_json.stdout)["identity"]
    assert json.loads(as_json.stdout)["accepted"] is True
    assert (identity["oid"], identity["kind"]) == (alice["oid"], "user")
    assert identity["client_id"] == cli_authority.app("web")["client_id"]


def test_validate_refusal_names_class_reason_and_status(
    cli_authority: CliAuthority, token: str
) -> None:
    result = cli_authority.run(
        "validate", "--dev-authority", "dev.json", "--api", "inventory", stdin=token
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "refused (UNAUTHENTICATED): InvalidAudienceError (reason bad_audience)",
        "  token is not for this API",
    ]
    as_json = cli_authority.run(
        "validate", "--dev-authority", "dev.json", "--api", "inventory", "--json", stdin=token
    )
    assert json.loads(as_json.stdout) == {
        "accepted": False,
        "error": "InvalidAudienceError",
        "reason": "bad_audience",
        "claim": None,
        "status": "UNAUTHENTICATED",
        "message": "token is not for this API",
    }


def test_validate_from_env_reads_the_dotenv_variables(
    cli_authority: CliAuthority, token: str
) -> None:
    result = run(
        "validate", "--from-env", stdin=token, env=clean_env(**cli_authority.dotenv("orders"))
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("accepted: user ")
    assert_no_secret([result.stdout, result.stderr], cli_authority.secrets)


def test_validate_by_flags(cli_authority: CliAuthority, token: str) -> None:
    doc = cli_authority.document
    flags = [
        "--tenant",
        "organizations",
        *(x for t in doc["tenants"] for x in ("--allowed-tenant", t["id"])),
        "--audience",
        cli_authority.app("orders")["client_id"],
        "--audience",
        cli_authority.app("orders")["app_id_uri"],
        "--authority-host",
        doc["authority_host"].removeprefix("https://"),  # a bare host means https
        "--v1-issuer-host",
        doc["authority_host"],
        "--ca-file",
        doc["ca_file"],
        "--leeway",
        "0",
    ]
    accepted = run("validate", *flags, "--version", "2.0", stdin=token)
    assert accepted.returncode == 0, accepted.stderr
    v1_only = run("validate", *flags, "--version", "1.0", stdin=token)
    assert v1_only.returncode == 1
    assert "InvalidClaimError (reason version_not_accepted, claim ver)" in v1_only.stdout
    assert 'token version 2.0 is not accepted (ValidatorOptions versions={"1.0"})' in (
        v1_only.stdout
    )


def test_validate_unreachable_keys_is_exit_4_naming_the_url(token: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    tenant = "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
    result = run(
        "validate",
        "--tenant",
        tenant,
        "--audience",
        "api://x",
        "--authority-host",
        f"https://127.0.0.1:{port}",
        stdin=token,
    )
    assert result.returncode == 4, result.stderr
    assert f"https://127.0.0.1:{port}/{tenant}/v2.0/.well-known/openid-configuration" in (
        result.stderr
    )


def test_validate_configuration_errors_are_exit_3(token: str) -> None:
    bad_tenant = run("validate", "--tenant", "contoso", "--audience", "x", stdin=token)
    assert bad_tenant.returncode == 3 and "tenant must be" in bad_tenant.stderr
    nothing = run("validate", stdin=token)
    assert nothing.returncode == 3 and "--tenant and --audience" in nothing.stderr
    no_api = run("validate", "--dev-authority", "x.json", stdin=token)
    assert no_api.returncode == 3
    from_env = run("validate", "--from-env", stdin=token)
    assert from_env.returncode == 3 and "AZURE_TENANT_ID is not set" in from_env.stderr


# -- help: every verb, every option ----------------------------------------------------------------


def _options() -> dict[str, list[str]]:
    parser = _parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    return {
        name: [
            option
            for action in sub._actions
            for option in action.option_strings
            if option not in ("-h", "--help")
        ]
        + [a.metavar for a in sub._actions if not a.option_strings and a.metavar]
        for name, sub in subparsers.items()
    }


@pytest.mark.parametrize("verb", ["authority", "token", "decode", "validate"])
def test_every_option_has_help_text(verb: str) -> None:
    result = run(verb, "--help")
    assert result.returncode == 0
    for option in _options()[verb]:
        assert option in result.stdout, option
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        verb
    ]
    for action in sub._actions:
        assert action.help, action.dest
    assert "exit codes:" in result.stdout and "130  interrupted" in result.stdout


def test_top_level_help_and_usage_errors() -> None:
    result = run("--help")
    assert result.returncode == 0
    for verb in ("authority", "token", "decode", "validate"):
        assert verb in result.stdout
    assert "4  unavailable" in result.stdout
    assert run("demo").returncode == 2  # `make demo` is the demo
    assert run().returncode == 2
