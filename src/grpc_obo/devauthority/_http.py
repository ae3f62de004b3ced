"""What the dev authority's routes share to read a request and answer it: the one form
parser (urlencoded only, bounded, each parameter at most once), single-valued query
parameters, Basic client authentication, and the no-store headers of every token answer.
Bad input is an `OAuthError` in Entra's words, never an exception of the HTTP library.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

from aiohttp import web

from grpc_obo.devauthority._oauth import OAuthError

MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64
NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        )
    raw = await request.read()
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(raw),
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(
            "invalid_request", 90014, "The request body is not a well-formed form."
        ) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name[:40]}' is "
                "duplicated.",
            )
        form[name] = value
    return form


def single_valued(query: Any) -> dict[str, str]:
    """Query parameters, each at most once (a repeated one is refused as at /token)."""
    params: dict[str, str] = {}
    for name, value in query.items():
        if name in params:
            raise OAuthError(
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name[:40]}' is "
                "duplicated.",
            )
        params[name] = value
    return params


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(
            "invalid_client", 7000218, "Only Basic client authentication is accepted.", status=401
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", 7000218, "The Basic authorization header is malformed.", status=401
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client", 7000218, "The Basic authorization header is malformed.", status=401
        )
    # RFC 6749 §2.3.1: both parts are form-urlencoded before joining.
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
