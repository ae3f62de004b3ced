"""The `claims` request parameter, read: the client capabilities it declares (`xms_cc`), the
requirements it puts on the access token, and the authentication contexts (`acrs`) it asks
for. Malformed claims are refused in Entra's words; hostile nesting is bad input, not a crash.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grpc_obo.devauthority._oauth import OAuthError


def capabilities(claims_json: str | None) -> list[str]:
    """Client capabilities from the `claims` request parameter (`xms_cc`, e.g. `cp1`)."""
    if not claims_json:
        return []
    try:
        parsed = _load_json(claims_json)
    except ValueError:
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter is not valid JSON."
        ) from None
    if not isinstance(parsed, dict):
        raise OAuthError("invalid_request", 90014, "The 'claims' parameter must be an object.")
    access = parsed.get("access_token", {})
    if not isinstance(access, dict):
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter's 'access_token' must be an object."
        )
    wanted = access.get("xms_cc", {})
    if not isinstance(wanted, dict):
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter's 'xms_cc' must be an object."
        )
    values = wanted.get("values")
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str) and v.isalnum() and len(v) <= 16]


def access_token_claims(claims_json: str) -> dict[str, Any]:
    """The requirements a `claims` request puts on the access token (capabilities aside)."""
    try:
        parsed = _load_json(claims_json)
    except ValueError:
        return {}
    access = parsed.get("access_token") if isinstance(parsed, dict) else None
    if not isinstance(access, dict):
        return {}
    return {name: value for name, value in access.items() if name != "xms_cc"}


def sign_in_acrs(claims_json: str | None) -> tuple[str, ...]:
    """The authentication contexts a sign-in carrying `claims_json` meets (it stands for the
    interactive step-up those contexts ask for)."""
    return tuple(sorted(requested_acrs(claims_json)))


def requested_acrs(claims_json: str | None) -> set[str]:
    """The authentication contexts (`c1`...) a `claims` request asks for (`value`/`values`)."""
    if not claims_json:
        return set()
    acrs = access_token_claims(claims_json).get("acrs")
    if not isinstance(acrs, dict):
        return set()
    values = acrs.get("values", [acrs.get("value")])
    return set(string_claims(values if isinstance(values, list) else [values]))


def string_claims(value: object) -> tuple[str, ...]:
    """The authentication context ids (`c1`..`c99`) in a claim's list; anything else dropped."""
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and re.fullmatch(r"c[1-9][0-9]?", v))


def _load_json(text: str) -> Any:
    """`json.loads` that reports hostile nesting as bad input, not as an internal error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
