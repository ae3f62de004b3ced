"""Hardened compact-JWS parsing and RS256 signature verification.

PyJWT accepts more than a validator of Entra access tokens should (padding, duplicate JSON keys,
nested or encrypted tokens, unbounded sizes), so the wire format is parsed here, strictly, before
anything looks at a key: a size cap, exactly three canonical base64url segments, JSON objects
without duplicate keys, and a header that can only name a key (never carry or point to one).
Every failure is a `MalformedTokenError` whose message never quotes the token.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from grpc_obo._errors import InvalidAudienceError, MalformedTokenError

__all__ = ["ALGORITHM", "ParsedToken", "b64url_decode", "parse_compact", "verify_rs256"]

ALGORITHM = "RS256"
"""The only signature algorithm accepted: ours, never taken from the token's header."""

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# What bytes.translate deletes from a well-formed compact token: everything in it.
_COMPACT_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# The last character of a canonical segment of length 4n + 2 (4n + 3) encodes 2 (4) data bits
# and 4 (2) zero bits: only these characters can end it.
_LAST_OF_4N2 = frozenset("AQgw")
_LAST_OF_4N3 = frozenset("AEIMQUYcgkosw048")
_MAX_KID = 256

# Header parameters that would let the token choose its own key or change how it is processed.
_KEY_CARRYING = ("jku", "x5u", "jwk", "x5c")
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})


class ParsedToken(NamedTuple):
    """A structurally valid compact JWS whose signature is not verified yet.

    A named tuple: immutable, and built in a fraction of a frozen dataclass's time (this is on
    the path of every token seen for the first time).
    """

    header: Mapping[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    kid: str | None
    x5t: str | None


# Header segments already parsed and accepted, with the key they name. Every token one key
# signs carries the same header bytes, so a new token costs a dict lookup here instead of a
# decode, a JSON parse and the header rules (pure functions of those bytes). Bounded, and
# emptied when full: junk headers can only make it miss.
# NOTE: not grpc_obo._common.LRU, on purpose. It is filled before any signature is checked,
# so a caller sending 64 made-up headers empties an LRU just as well (recency protects
# nothing here), and a miss costs one header parse. An LRU hit costs ~90 ns more than a dict
# lookup (a method call and `move_to_end`); with the shared-sets table of `_rules` also an
# LRU, benchmarks/cold_bench.py measured 2.18x instead of 2.12x RSAPublicKey.verify (median
# of four runs each, 2026-12-08).
_HEADERS: dict[str, tuple[Mapping[str, Any], str | None, str | None]] = {}
_MAX_HEADERS = 64


def _malformed(reason: str, message: str) -> MalformedTokenError:
    return MalformedTokenError(message, reason=reason)


def b64url_decode(segment: str) -> bytes | None:
    """Decode canonical unpadded base64url, or None.

    Canonical: only the url-safe alphabet (no padding, no `+`/`/`, no whitespace), a length
    that is not 4n + 1, and zero trailing bits, so one token has exactly one spelling (the cache
    key is the token itself). That is what a re-encoding round trip would check, without it.
    """
    if not _B64URL.fullmatch(segment):
        return None
    return _decode_alphabet_checked(segment)


def _decode_alphabet_checked(segment: str) -> bytes | None:
    """`b64url_decode` of a segment already known to be made of the url-safe alphabet only."""
    rest = len(segment) % 4
    if rest == 1:
        return None
    if (rest == 2 and segment[-1] not in _LAST_OF_4N2) or (
        rest == 3 and segment[-1] not in _LAST_OF_4N3
    ):
        return None
    # NOTE: the alphabet is checked, so the lenient decoder sees only valid characters; the
    # "==" completes any padding (a2b_base64 ignores what is left over).
    try:
        return binascii.a2b_base64(segment.encode("ascii").translate(_URL_TO_STANDARD) + b"==")
    except binascii.Error:  # not expected after the checks above; refused, never a crash
        return None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # NOTE: PyJWT (via json.loads) keeps the last duplicate; another parser may keep the
        # first. Two readers seeing two different claims is how confusion attacks start.
        raise ValueError("duplicate key")
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError("NaN/Infinity are not JSON")


# Built once: json.loads(text, object_pairs_hook=...) builds a new decoder on every call.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
)


# The scanner `JSONDecoder.decode` runs (C when available); not in typeshed's stubs.
_SCAN: Callable[[str, int], tuple[Any, int]] = _STRICT_JSON.scan_once  # type: ignore[attr-defined]


def loads_strict(raw: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate object keys and NaN/Infinity. Raises ValueError."""
    try:
        text = raw.decode("utf-8")
        # NOTE: the scanner alone, as `decode` calls it, without `decode`'s two whitespace
        # regexes around it; text with anything around the value takes the full path.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        return value if end == len(text) else _STRICT_JSON.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _json_object(raw: bytes | None, what: str) -> dict[str, Any]:
    if raw is None:
        raise _malformed("bad_encoding", f"token {what} is not canonical base64url")
    try:
        value = loads_strict(raw)
    except ValueError:
        raise _malformed("bad_json", f"token {what} is not a JSON object") from None
    if not isinstance(value, dict):
        raise _malformed("bad_json", f"token {what} is not a JSON object")
    return value


def _key_name(header: dict[str, Any], name: str) -> str | None:
    value = header.get(name)
    if value is None and name not in header:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_KID:
        raise _malformed("bad_kid", f"token header '{name}' must be a short non-empty string")
    return value


def _check_header(header: dict[str, Any]) -> None:
    if "nonce" in header:
        # Microsoft Graph access tokens carry a header nonce; they are Graph's to validate.
        raise InvalidAudienceError("token is for Microsoft Graph", reason="graph_token")
    if "enc" in header or "zip" in header:
        raise _malformed("encrypted", "encrypted tokens are not accepted")
    alg = header.get("alg")
    if alg != ALGORITHM:
        # NOTE: includes "none", HS256 (a public key used as an HMAC secret) and every other
        # algorithm: the list is ours, never the header's.
        raise _malformed("bad_alg", "token algorithm must be RS256")
    if "crit" in header or "b64" in header:
        raise _malformed("crit", "token header extensions ('crit') are not supported")
    for name in _KEY_CARRYING:
        if name in header:
            raise _malformed("embedded_key", "token header must not carry or point to a key")
    if "cty" in header:
        raise _malformed("nested_token", "nested tokens ('cty') are not accepted")
    typ = header.get("typ")
    if typ is not None and not (isinstance(typ, str) and typ.lower() in _ACCEPTED_TYP):
        raise _malformed("bad_typ", "token type must be JWT")


def parse_compact(token: object, *, max_bytes: int) -> ParsedToken:
    """Parse a compact JWS into header, claims and signature, refusing anything unusual."""
    if not isinstance(token, str):
        raise _malformed("not_a_string", "token must be a string")
    # Size first: nothing below may run on an unbounded input.
    if len(token) > max_bytes:
        raise _malformed("too_large", "token is too large")
    if not token.isascii():
        raise _malformed("bad_encoding", "token must be ASCII")
    dots = token.count(".")
    if dots == 4:
        raise _malformed("encrypted", "encrypted tokens (JWE) are not accepted")
    if dots != 2:
        raise _malformed("bad_segments", "token must have exactly three segments")
    header_b64, claims_b64, signature_b64 = token.split(".")
    if not header_b64 or not claims_b64 or not signature_b64:
        raise _malformed("bad_segments", "token has an empty segment")
    # One C pass over the whole token's alphabet (a regex per segment costs more than the
    # JSON parsing); when it fails, each segment is checked on its own, in order, so the
    # error names the first bad one.
    alphabet_ok = not token.encode("ascii").translate(None, _COMPACT_ALPHABET)
    known = _HEADERS.get(header_b64) if alphabet_ok else None
    if known is None:
        known = _parse_header(header_b64, alphabet_ok)
    header, kid, x5t = known
    if alphabet_ok or _B64URL.fullmatch(claims_b64):
        claims = _json_object(_decode_alphabet_checked(claims_b64), "payload")
    else:
        raise _malformed("bad_encoding", "token payload is not canonical base64url")
    signature = (
        _decode_alphabet_checked(signature_b64)
        if alphabet_ok or _B64URL.fullmatch(signature_b64)
        else None
    )
    if signature is None:
        raise _malformed("bad_encoding", "token signature is not canonical base64url")
    return ParsedToken(
        header,
        claims,
        token[: len(header_b64) + 1 + len(claims_b64)].encode("ascii"),
        signature,
        kid,
        x5t,
    )


def _parse_header(
    segment: str, alphabet_ok: bool
) -> tuple[Mapping[str, Any], str | None, str | None]:
    raw = _decode_alphabet_checked(segment) if alphabet_ok or _B64URL.fullmatch(segment) else None
    header = _json_object(raw, "header")
    _check_header(header)
    kid = _key_name(header, "kid")
    x5t = _key_name(header, "x5t")
    if kid is None and x5t is None:
        raise _malformed("no_kid", "token header names no key ('kid' or 'x5t')")
    # A read-only view, returned here too: every later token with this header shares the
    # object, so the first one's holder must not be able to change what was accepted.
    view = MappingProxyType(header)
    if alphabet_ok:
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[segment] = (view, kid, x5t)
    return view, kid, x5t


# Stateless, so built once rather than per verification.
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def verify_rs256(key: RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RS256) over the signing input."""
    # The signature length must equal the modulus length (RFC 8017 §8.2.2 step 1).
    if len(signature) != (key.key_size + 7) // 8:
        return False
    try:
        key.verify(signature, signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        return False
    return True
