"""`grpc-obo decode`: a token's header and claims, UNVERIFIED, times as dates.

Decoding is lenient on purpose (`=` padding, duplicate JSON keys: the last one is shown, as
PyJWT would read it), so that a token the validator refuses can still be looked at; the
validator's own strict parser then says whether, and why, it would refuse what is shown.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import time
from dataclasses import fields
from typing import Any

from grpc_obo import MalformedTokenError, ValidatorOptions
from grpc_obo._validation import parse_compact

from ._common import (
    EXIT_OK,
    CliError,
    _read_token,
    _say,
    _terminal_safe,
    _when,
    add_token_verb,
)

_TIME_CLAIMS = ("exp", "nbf", "iat", "auth_time")


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CliError(f"not a JWT: its {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise CliError(f"not a JWT: its {what} is not a JSON object")
    return value


def _decode_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    parts = token.split(".")
    if len(parts) == 5:
        raise CliError("an encrypted token (JWE): nothing to show without its key")
    if len(parts) != 3:
        raise CliError(f"not a JWT: {len(parts)} dot-separated parts, a JWS has 3")
    header = _b64json(parts[0], "header")
    claims = _b64json(parts[1], "payload")
    return header, claims, len(parts[2]) * 3 // 4


# The size the validator accepts unless configured otherwise.
_MAX_TOKEN_BYTES: int = next(
    f.default for f in fields(ValidatorOptions) if f.name == "max_token_bytes"
)  # type: ignore[assignment]


def _refusal(token: str) -> MalformedTokenError | None:
    """Why the validator's strict parser refuses `token` before any key or claim, or None."""
    try:
        parse_compact(token, max_bytes=_MAX_TOKEN_BYTES)
    except MalformedTokenError as refused:
        return refused
    return None


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _date(value: float) -> str | None:
    """The ISO date of a time claim, or None for one no date can show (1e20, inf, NaN)."""
    try:
        return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def run(args: argparse.Namespace) -> int:
    token = _read_token(args.token)
    header, claims, signature_bytes = _decode_parts(token)
    refused = _refusal(token)
    now = time.time()
    dates = {
        name: date
        for name in _TIME_CLAIMS
        if isinstance(claims.get(name), (int, float))
        and not isinstance(claims[name], bool)
        and (date := _date(claims[name])) is not None
    }
    if args.json:
        document = {
            "verified": False,
            "header": header,
            "claims": claims,
            "dates": dates,
            "refused": (
                None if refused is None else {"reason": refused.reason, "message": refused.message}
            ),
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    _say("UNVERIFIED: the signature was not checked; anyone can write these claims.")
    _say("            (`grpc-obo validate` verifies a token as an API does.)")
    # Names are escaped before measuring: the columns line up as shown.
    shown_header = {_terminal_safe(k): _shown(v) for k, v in header.items()}
    shown_claims = {
        _terminal_safe(k): f"{_when(float(v), now)}  [{v}]" if k in dates else _shown(v)
        for k, v in claims.items()
    }
    width = max(len(k) for k in (*shown_header, *shown_claims, "signature"))
    _say("header:")
    for name, text in shown_header.items():
        _say(f"  {name:<{width}}  {text}")
    _say("claims:")
    for name, text in shown_claims.items():
        _say(f"  {name:<{width}}  {text}")
    _say(f"  {'signature':<{width}}  ({signature_bytes} bytes, not shown)")
    if "exp" in dates:
        state = "expired" if float(claims["exp"]) < now else "not expired"
        _say(f"{state} by this machine's clock")
    if refused is not None:
        # A fixed sentence and a bounded name: nothing of the token's own text.
        _say(f"the validator would refuse this token: {refused.message} ({refused.reason})")
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
) -> None:
    add_token_verb(
        commands,
        formatter,
        "decode",
        summary="show a token's header and claims (UNVERIFIED)",
        description=(
            "Show a JWT's header and claims, clearly marked UNVERIFIED, with exp/nbf/iat/"
            "auth_time as dates. The signature is neither checked nor printed."
        ),
        json_help="print header, claims and dates as JSON",
    )
