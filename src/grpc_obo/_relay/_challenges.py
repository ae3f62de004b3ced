"""`WWW-Authenticate` challenges from a downstream: where they are read (a gRPC call's trailing
metadata, an HTTP response's headers), the one parser, the one choice among several, and the
rebuilt value a caller may see."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grpc_obo._common import is_guid
from grpc_obo._relay._claims import remembered_claims

__all__ = [
    "Challenge",
    "challenge_values",
    "choose_challenge",
    "claims_of",
    "parse_challenges",
    "rebuild_challenge",
]


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed challenge: its scheme and its auth-params (names in lower case)."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"


def challenge_values(source: object) -> list[str | bytes]:
    """The `WWW-Authenticate` values a downstream sent: from a gRPC call's trailing metadata
    (key-value pairs, in any container grpc gives, or None) or an HTTP response's headers
    (anything with httpx's `get_list`). Duck-typed: the relay imports neither grpc nor httpx.
    """
    get_list = getattr(source, "get_list", None)
    if callable(get_list):
        pairs: Iterable[Any] = (("www-authenticate", v) for v in get_list("www-authenticate"))
    else:
        pairs = source if isinstance(source, Iterable) else ()
    values: list[str | bytes] = []
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):  # not a pair: nothing a downstream said
            continue
        is_challenge = isinstance(key, str) and key.lower() == "www-authenticate"
        if is_challenge and isinstance(value, str | bytes):
            values.append(value)
    return values


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS = " \t"
_MAX_VALUE = 8192  # per header value: a challenge is a few hundred bytes
_MAX_CHALLENGES = 16


def parse_challenges(values: Iterable[str | bytes]) -> list[Challenge]:
    """Every well-formed challenge in these `WWW-Authenticate` values, in order (RFC 7235).

    A value may hold several challenges. A malformed challenge (a repeated parameter, an
    unterminated quoted string, a control character) is dropped with the rest of its value;
    values that are not ASCII text are skipped whole.
    """
    found: list[Challenge] = []
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                continue
        if not isinstance(value, str) or len(value) > _MAX_VALUE or not value.isascii():
            continue
        found.extend(_parse_value(value))
        if len(found) >= _MAX_CHALLENGES:
            return found[:_MAX_CHALLENGES]
    return found


def _parse_value(text: str) -> list[Challenge]:
    if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in text):
        return []
    out: list[Challenge] = []
    scheme: str | None = None
    params: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and (text[pos] in _OWS or text[pos] == ","):
            pos += 1
        if pos >= end:
            break
        name = _TOKEN.match(text, pos)
        if name is None:
            return out  # malformed from here on: the challenge being read is dropped
        after = name.end()
        while after < end and text[after] in _OWS:
            after += 1
        if scheme is not None and after < end and text[after] == "=":
            pos = after + 1
            while pos < end and text[pos] in _OWS:
                pos += 1
            if pos < end and text[pos] == '"':
                quoted = _QUOTED.match(text, pos)
                if quoted is None:
                    return out
                value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                pos = quoted.end()
            else:
                token = _TOKEN.match(text, pos)
                if token is None:  # a token68 ("abc==") or garbage: not a Bearer parameter
                    return out
                value, pos = token.group(), token.end()
            key = name.group().lower()
            if any(k == key for k, _ in params):
                return out  # RFC 7235: each parameter at most once per challenge
            params.append((key, value))
            continue
        if scheme is not None:
            out.append(Challenge(scheme, tuple(params)))
        scheme, params, pos = name.group(), [], after
    if scheme is not None:
        out.append(Challenge(scheme, tuple(params)))
    return out


def choose_challenge(values: Iterable[str | bytes]) -> Challenge | None:
    """*The* challenge of an answer that may carry several: the same choice on every side.

    A Bearer claims challenge with usable claims first, then a Bearer challenge with an error
    code we relay, then any Bearer challenge; the first of each kind. Other schemes are not
    ours to relay.
    """
    bearers = [c for c in parse_challenges(values) if c.is_bearer]
    for challenge in bearers:
        if challenge.get("error") == "insufficient_claims" and _claims_param(challenge):
            return challenge
    for challenge in bearers:
        if challenge.get("error") in _DESCRIPTIONS:
            return challenge
    return bearers[0] if bearers else None


# The only `error` codes a rebuilt challenge carries, each with a fixed description.
_DESCRIPTIONS = {
    "invalid_token": "a downstream API refused the user's token",
    # NOTE: at a hop behind, grpc_obo says insufficient_scope for a missing scope and for
    # missing consent alike (ConsentRequiredError): the fixed sentence names both.
    "insufficient_scope": (
        "a downstream API needs a permission the user's token lacks (a scope, or consent to it)"
    ),
    "insufficient_claims": (
        "a downstream API needs more claims: sign in again with the claims in this challenge"
    ),
    "invalid_request": "a downstream API refused the request",
}
# RFC 6749 scope-token characters; no quote or backslash, so the value needs no escaping.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")
_REALM = re.compile(r"[A-Za-z0-9 ._:/@-]{0,128}")
_MAX_SCOPES = 32
_MAX_ENCODED = 8192  # base64 claims before filtering (what is kept is at most 1 KB)


def rebuild_challenge(challenge: Challenge | None) -> str | None:
    """The `www-authenticate` value a caller may see for a downstream's challenge, or None.

    Rebuilt from an allow-list, each value validated: `realm`, `error` (a known code) with a
    fixed `error_description`, `scope`, the resource's `client_id` (a GUID) and `claims`
    (filtered by `remembered_claims`). Never `authorization_uri`, never the downstream's
    `error_description`, never anything else it sent.
    """
    if challenge is None or not challenge.is_bearer:
        return None
    parts: list[str] = []
    realm = challenge.get("realm")
    if realm is not None and _REALM.fullmatch(realm):
        parts.append(f'realm="{realm}"')
    error = challenge.get("error")
    if error in _DESCRIPTIONS:
        parts.append(f'error="{error}"')
        parts.append(f'error_description="{_DESCRIPTIONS[error]}"')
    scope = challenge.get("scope")
    if scope is not None:
        scopes = scope.split(" ")
        if 0 < len(scopes) <= _MAX_SCOPES and all(_SCOPE.fullmatch(s) for s in scopes):
            parts.append(f'scope="{scope}"')
    client_id = challenge.get("client_id")
    if client_id is not None and is_guid(client_id):
        parts.append(f'client_id="{client_id.lower()}"')
    claims = _claims_param(challenge)
    if claims is not None:
        encoded = base64.b64encode(claims.encode("utf-8")).decode("ascii")
        parts.append(f'claims="{encoded}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def claims_of(challenge: Challenge | None) -> str | None:
    """The claims (JSON) of a Bearer claims challenge, filtered by `remembered_claims`."""
    if challenge is None or challenge.get("error") != "insufficient_claims":
        return None
    return _claims_param(challenge)


def _claims_param(challenge: Challenge) -> str | None:
    raw = challenge.get("claims")
    if raw is None or len(raw) > _MAX_ENCODED:
        return None
    try:
        # Entra sends standard base64; accept the URL-safe alphabet and missing padding too.
        padded = raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4)
        text = base64.b64decode(padded, validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return remembered_claims(text)
