"""Hardening beyond PyJWT: malformed, oversized, ambiguous and key-smuggling tokens are refused
before any key is used. Malicious shapes carry a valid RS256 signature where one can exist, so
each fails for the rule under test and not for a bad signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import grpc_obo
from grpc_obo import TokenValidator
from tests.validation.tokens import (
    API_CLIENT_ID,
    b64url,
    jwk,
    mint,
    record,
    rsa_key,
    sign_segments,
    v2_claims,
)

GOOD_HEADER = {"alg": "RS256", "typ": "JWT", "kid": "key-a"}


def header(**changes: Any) -> dict[str, Any]:
    result = dict(GOOD_HEADER)
    result.update(changes)
    return {k: v for k, v in result.items() if v is not None}


async def test_sign_segments_makes_acceptable_tokens(validator: TokenValidator) -> None:
    # The control for every case below: same helper, good header and payload.
    assert (await validator.validate(sign_segments(header(), v2_claims()))).tid


HEADER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("alg none", header(alg="none"), "bad_alg"),
    ("alg HS256", header(alg="HS256"), "bad_alg"),
    ("alg RS512", header(alg="RS512"), "bad_alg"),
    ("alg PS256", header(alg="PS256"), "bad_alg"),
    ("alg ES256", header(alg="ES256"), "bad_alg"),
    ("alg lowercase", header(alg="rs256"), "bad_alg"),
    ("alg missing", header(alg=None), "bad_alg"),
    ("alg list", header(alg=["RS256"]), "bad_alg"),
    ("crit", header(crit=["exp"], exp=1), "crit"),
    ("b64 false", header(b64=False), "crit"),
    ("jku", header(jku="https://evil.example/keys"), "embedded_key"),
    ("x5u", header(x5u="https://evil.example/cert"), "embedded_key"),
    ("jwk", header(jwk=jwk("key-a")), "embedded_key"),
    ("x5c", header(x5c=["MIIB"]), "embedded_key"),
    ("cty JWT (nested)", header(cty="JWT"), "nested_token"),
    ("enc (JWE header)", header(enc="A256GCM"), "encrypted"),
    ("zip", header(zip="DEF"), "encrypted"),
    ("kid number", header(kid=7), "bad_kid"),
    ("kid list", header(kid=["key-a"]), "bad_kid"),
    ("kid null", header(kid=None) | {"kid": None}, "bad_kid"),
    ("kid empty", header(kid=""), "bad_kid"),
    ("kid huge", header(kid="k" * 300), "bad_kid"),
    ("x5t number", header(kid=None, x5t=5), "bad_kid"),
    ("no kid, no x5t", header(kid=None), "no_kid"),
    ("typ JWE", header(typ="JWE"), "bad_typ"),
    ("typ dpop", header(typ="dpop+jwt"), "bad_typ"),
    ("typ number", header(typ=1), "bad_typ"),
]


@pytest.mark.parametrize(
    ("bad_header", "reason"),
    [case[1:] for case in HEADER_CASES],
    ids=[case[0] for case in HEADER_CASES],
)
async def test_header_rules(
    validator: TokenValidator, bad_header: dict[str, Any], reason: str
) -> None:
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(sign_segments(bad_header, v2_claims()))
    assert caught.value.reason == reason


async def test_at_jwt_typ_is_accepted(validator: TokenValidator) -> None:
    assert await validator.validate(sign_segments(header(typ="at+jwt"), v2_claims()))


async def test_graph_nonce_header_is_refused_as_not_ours(validator: TokenValidator) -> None:
    with pytest.raises(grpc_obo.InvalidAudienceError) as caught:
        await validator.validate(sign_segments(header(nonce="abc"), v2_claims()))
    assert caught.value.reason == "graph_token"


async def test_hs256_signed_with_the_public_key_is_refused(validator: TokenValidator) -> None:
    # The classic key-confusion attack: HMAC keyed with the RSA public key the verifier holds.
    pem = (
        rsa_key("key-a")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    head = b64url(json.dumps(header(alg="HS256")).encode())
    signing_input = f"{head}.{b64url(json.dumps(v2_claims()).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(record(f"{signing_input}.{b64url(mac)}"))
    assert caught.value.reason == "bad_alg"


async def test_duplicate_claim_keys_are_refused(validator: TokenValidator) -> None:
    claims = v2_claims()
    body = json.dumps(claims)[:-1] + ', "aud": "' + API_CLIENT_ID + '"}'
    token = sign_segments(header(), body.encode())
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(token)
    assert caught.value.reason == "bad_json"


async def test_duplicate_header_keys_are_refused(validator: TokenValidator) -> None:
    raw = b'{"alg": "none", "alg": "RS256", "kid": "key-a"}'
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(sign_segments(raw, v2_claims()))
    assert caught.value.reason == "bad_json"


@pytest.mark.parametrize(
    "payload",
    [
        b"[1, 2]",
        b'"a string"',
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b"\xff\xfe{}",
        b"{" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b"",
    ],
    ids=["array", "string", "NaN", "Infinity", "not UTF-8", "unclosed", "deep nesting", "empty"],
)
async def test_payload_must_be_a_plain_json_object(
    validator: TokenValidator, payload: bytes
) -> None:
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(sign_segments(header(), payload))
    assert caught.value.reason in {"bad_json", "bad_segments"}


def _segments(token: str) -> list[str]:
    return token.split(".")


def _noncanonical_last_char(segment: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[value | 1]


STRUCTURE_CASES: list[tuple[str, Callable[[str], str], str]] = [
    ("two segments", lambda t: ".".join(_segments(t)[:2]), "bad_segments"),
    ("four segments", lambda t: t + ".x", "bad_segments"),
    ("five segments (JWE)", lambda t: t + ".a.b", "encrypted"),
    ("empty signature (alg none style)", lambda t: t.rsplit(".", 1)[0] + ".", "bad_segments"),
    ("empty header", lambda t: "." + t.split(".", 1)[1], "bad_segments"),
    ("padding on payload", lambda t: "{}.{}==.{}".format(*_segments(t)), "bad_encoding"),
    ("padding on signature", lambda t: t + "==", "bad_encoding"),
    ("standard alphabet", lambda t: t[:-2] + "+/", "bad_encoding"),
    ("whitespace", lambda t: t[:40] + " " + t[40:], "bad_encoding"),
    ("newline", lambda t: t + "\n", "bad_encoding"),
    ("non-ASCII", lambda t: t[:-1] + "é", "bad_encoding"),
    ("non-canonical trailing bits", _noncanonical_last_char, "bad_encoding"),
    ("impossible length", lambda t: t + "AAA", "bad_encoding"),  # 342 + 3 chars: 4n + 1
]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [case[1:] for case in STRUCTURE_CASES],
    ids=[case[0] for case in STRUCTURE_CASES],
)
async def test_compact_structure_is_canonical(
    validator: TokenValidator, mangle: Callable[[str], str], reason: str
) -> None:
    good = mint(v2_claims())
    bad = record(mangle(good))
    assert bad != good
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(bad)
    assert caught.value.reason == reason


async def test_mangled_valid_token_is_refused_even_after_caching(validator: TokenValidator) -> None:
    # The cache is keyed by the exact text: a second spelling of a cached token is not a hit.
    good = mint(v2_claims())
    await validator.validate(good)
    with pytest.raises(grpc_obo.MalformedTokenError):
        await validator.validate(record(good + "=="))


async def test_size_cap_applies_before_parsing(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(max_token_bytes=2048)
    big = mint(v2_claims(padding="x" * 2000))
    assert len(big) > 2048
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(big)
    assert caught.value.reason == "too_large"
    with pytest.raises(grpc_obo.MalformedTokenError):
        await validator.validate(record("a" * 10_000_000))


async def test_non_string_token(validator: TokenValidator) -> None:
    with pytest.raises(grpc_obo.MalformedTokenError):
        await validator.validate(b"abc.def.ghi")  # type: ignore[arg-type]


async def test_truncated_or_altered_signature_is_a_bad_signature(
    validator: TokenValidator,
) -> None:
    head, body, sig = _segments(mint(v2_claims()))
    raw = base64.urlsafe_b64decode(sig + "==")
    altered = b64url(raw[:-1] + bytes([raw[-1] ^ 1]))
    for bad_sig in (altered, b64url(raw[:-1]), b64url(raw + b"\0")):
        with pytest.raises(grpc_obo.InvalidSignatureError):
            await validator.validate(record(f"{head}.{body}.{bad_sig}"))


async def test_payload_swapped_under_a_valid_signature(validator: TokenValidator) -> None:
    head, _, sig = _segments(mint(v2_claims()))
    other = b64url(json.dumps(v2_claims(oid="00000000-0000-0000-0000-0000000000ff")).encode())
    with pytest.raises(grpc_obo.InvalidSignatureError):
        await validator.validate(record(f"{head}.{other}.{sig}"))


# -- the faster cold path keeps every check (issue 23) ---------------------------------------


def _with_last_char(segment: str, bump: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | bump]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize("rest", [2, 3], ids=["length 4n+2", "length 4n+3"])
async def test_non_canonical_trailing_bits_in_every_segment(
    validator: TokenValidator, which: int, rest: int
) -> None:
    """Each segment has one spelling: a last character with trailing bits set is refused
    (before any key is used: a signature one byte too long still fails for its encoding)."""
    for extra in range(12):
        segments = _segments(sign_segments(header(pad="x" * extra), v2_claims(pad="x" * extra)))
        if which == 2:
            signature = base64.urlsafe_b64decode(segments[2] + "==")
            segments[2] = b64url(signature + b"\0" * extra)
        if len(segments[which]) % 4 == rest:
            break
    else:
        raise AssertionError("no padding gave the segment length wanted")
    segments[which] = _with_last_char(segments[which], 1)
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(record(".".join(segments)))
    assert caught.value.reason == "bad_encoding"


@pytest.mark.parametrize(
    "body",
    [
        '{"aud": "x", "aud" : "%s"}',
        '{"aud": "x",\n"aud"\t:"%s"}',
        '{"aud": "x", "a\\u0075d": "%s"}',
        '{"aud": "x\\":", "aud": "%s"}',
        '{"xms": {"a": 1, "a": 2}, "aud": "%s"}',
    ],
    ids=["space before colon", "tab, newline", "escaped key", "quote-colon in a value", "nested"],
)
async def test_duplicate_keys_in_any_spelling_are_refused(
    validator: TokenValidator, body: str
) -> None:
    claims = json.dumps(v2_claims())[1:-1]
    raw = ("{" + claims + ", " + (body % API_CLIENT_ID)[1:]).encode()
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validator.validate(sign_segments(header(), raw))
    assert caught.value.reason == "bad_json"


async def test_a_header_seen_before_is_still_bound_to_its_own_token(
    validator: TokenValidator,
) -> None:
    """Accepted headers are remembered (their bytes decide every header rule); the rest of
    each token is still checked, and a refused header is refused every time."""
    good = mint(v2_claims())
    await validator.validate(good)
    head, body, sig = _segments(good)
    for bad in (f"{head}.{body}==.{sig}", f"{head}.{body}.{sig}+", f"{head}.e30.{sig}"):
        with pytest.raises((grpc_obo.MalformedTokenError, grpc_obo.InvalidSignatureError)):
            await validator.validate(record(bad))
    refused = sign_segments(header(alg="none"), v2_claims())
    for _ in range(2):
        with pytest.raises(grpc_obo.MalformedTokenError) as caught:
            await validator.validate(refused)
        assert caught.value.reason == "bad_alg"


async def test_remembered_headers_are_bounded(validator: TokenValidator) -> None:
    from grpc_obo._validation import _jose

    for index in range(3 * _jose._MAX_HEADERS):
        await validator.validate(sign_segments(header(n=index), v2_claims()))
        assert len(_jose._HEADERS) <= _jose._MAX_HEADERS


async def test_json_around_the_object_is_read_as_before(validator: TokenValidator) -> None:
    """The scanner's fast path takes only a bare object; whitespace around it is still JSON
    (accepted, as before), anything else after it is not."""
    body = json.dumps(v2_claims()).encode()
    assert await validator.validate(sign_segments(header(), b" \n" + body + b"\t "))
    for bad in (body + b"x", body + b"{}", b"\x00" + body):
        with pytest.raises(grpc_obo.MalformedTokenError) as caught:
            await validator.validate(sign_segments(header(), bad))
        assert caught.value.reason == "bad_json"


def test_a_remembered_header_cannot_be_changed_through_the_first_token() -> None:
    """The header a parse returns is the read-only view every later token with the same
    header shares: changing it (a bug of a caller's) cannot change what was accepted."""
    from grpc_obo._validation import _jose

    token = mint(v2_claims())
    first = _jose.parse_compact(token, max_bytes=16384)
    with pytest.raises(TypeError):
        first.header["alg"] = "none"  # type: ignore[index]
    assert _jose.parse_compact(token, max_bytes=16384).header["alg"] == "RS256"
