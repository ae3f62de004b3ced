"""What a token says never drives the terminal: `grpc-obo decode` and `validate` (and their error
text) show C0 and C1 control characters and DEL escaped (`\\x1b`, `\\r`, `\\n`, `\\x9b`...), so
a claim cannot retitle the window, clear the screen or forge a line. Run as a subprocess, as a
user runs it; --json output was already escaped by JSON itself.
"""

from __future__ import annotations

import base64
import json

import pytest

from grpc_obo.devauthority import DevAuthority
from tests.cli.conftest import run

# What a hostile token carries: an OSC window title, a screen clear, a forged line (CR/LF),
# C1 controls (CSI, NEL, OSC as single code points), DEL, a NUL and a bidi override.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"
FORGED = "alice\r\nexpired by this machine's clock"
C1 = "\x9b31m\x85\x9d0;x\x9c"
OTHERS = "a\x7fb\x00c\u202ed"
HOSTILE = (TITLE, CLEAR, FORGED, C1, OTHERS)


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{b64(header)}.{b64(claims)}.c2lnbmF0dXJl"


def assert_terminal_safe(text: str) -> None:
    """Only printable text and the line ends the command itself writes."""
    for line in text.split("\n"):
        bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]
        assert not bad, f"control characters reached the terminal: {bad!r} in {line!r}"


def test_decode_escapes_controls_in_claim_values_names_and_header() -> None:
    token = unsigned(
        {"alg": "RS256", "kid": CLEAR, "typ": "JWT"},
        {
            "name": TITLE,
            "preferred_username": FORGED,
            "oid": C1,
            "tid": OTHERS,
            f"x{TITLE}": "claim name",
            "roles": [TITLE],
        },
    )
    result = run("decode", stdin=token)
    assert result.returncode == 0, result.stderr
    assert_terminal_safe(result.stdout)
    lines = result.stdout.splitlines()
    # Nothing forged: the only verdict line is none at all (no exp), and every claim is one line.
    assert not any(line.startswith("expired by") for line in lines)
    assert r"\x1b]0;pwned\x07" in result.stdout
    assert r"alice\r\nexpired by this machine's clock" in result.stdout
    assert r"\x9b31m\x85\x9d0;x\x9c" in result.stdout
    assert r"a\x7fb\x00c\u202ed" in result.stdout
    fields = [line for line in lines if line.startswith("  ") and line[2] != " "]
    assert len(fields) == 3 + 6 + 1  # header, claims, signature: one line each
    # --json was already safe, and keeps the exact values.
    document = json.loads(run("decode", "--json", stdin=token).stdout)
    assert document["claims"]["name"] == TITLE
    assert document["header"]["kid"] == CLEAR


@pytest.fixture
def hostile_token(grpc_obo_authority: DevAuthority) -> str:
    """A token the authority really signed, whose display claims are hostile."""
    return grpc_obo_authority.mint_user_token(
        "alice", claims={"name": TITLE + CLEAR, "preferred_username": FORGED + C1 + OTHERS}
    )


def _validate_flags(authority: DevAuthority, audience: str) -> list[str]:
    return [
        "--tenant",
        authority.tenant_id,
        "--audience",
        audience,
        "--authority-host",
        authority.base_url,
        "--ca-file",
        str(authority.ca_file),
    ]


def test_validate_escapes_controls_in_the_identity_it_prints(
    grpc_obo_authority: DevAuthority, hostile_token: str
) -> None:
    original = grpc_obo_authority.world.app("original")
    flags = _validate_flags(grpc_obo_authority, original.client_id)
    result = run("validate", *flags, stdin=hostile_token)
    assert result.returncode == 0, result.stderr
    assert_terminal_safe(result.stdout)
    assert r"\x1b]0;pwned\x07\x1b[2J\x1b[H" in result.stdout
    assert r"alice\r\nexpired by" in result.stdout
    as_json = json.loads(run("validate", *flags, "--json", stdin=hostile_token).stdout)
    assert as_json["identity"]["name"] == TITLE + CLEAR


def test_validate_refusals_and_errors_are_terminal_safe(
    grpc_obo_authority: DevAuthority, hostile_token: str
) -> None:
    flags = _validate_flags(grpc_obo_authority, "api://someone-else")
    refused = run("validate", *flags, stdin=hostile_token)
    assert refused.returncode == 1
    assert_terminal_safe(refused.stdout + refused.stderr)
    # An error that quotes what the user passed shows it escaped.
    quoted = run(
        "token",
        "--tenant",
        grpc_obo_authority.tenant_id,
        "--client-id",
        grpc_obo_authority.world.app("client").client_id,
        "--ca-file",
        TITLE,
        "--scope",
        "x",
    )
    assert quoted.returncode == 3
    assert r"\x1b]0;pwned" in quoted.stderr  # quoted, and escaped
    assert_terminal_safe(quoted.stderr)
