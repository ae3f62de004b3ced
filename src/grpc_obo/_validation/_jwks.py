"""JWKS documents: which keys in one are usable, as an immutable `KeySet`.

JWKS parsing is tolerant of real documents and strict about what becomes a key: RSA only, at
least 2048 bits, not `use: enc`. Accepted on purpose: `n`/`e` in padded or standard-alphabet
base64 (Microsoft's own test JWKS does this; the key came over TLS from the configured authority,
so this tolerance does not reach token parsing), unknown members, and a key `alg` that is not a
JWS algorithm name at all (Microsoft's legacy "SHA256"). A key whose `alg` names another JWS
algorithm (PS256, RS512, ...) is skipped, since we only ever verify RS256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from grpc_obo._validation._jose import ALGORITHM

__all__ = ["MAX_RSA_BITS", "MIN_RSA_BITS", "KeySet", "SigningKey", "parse_jwks"]

logger = logging.getLogger("grpc_obo.validation")

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bigger moduli only make each verify slower, which helps an attacker
_MAX_KEYS = 100

_JWS_ALGS = frozenset(
    {
        "none",
        *(f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)),
        "ES256K",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
_SIGNING_OPS = frozenset({"verify", "sign", "signing"})


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable RS256 verification key from a JWKS."""

    kid: str | None
    x5t: str | None
    public_key: RSAPublicKey = field(repr=False)
    issuer: str | None
    """The key's `issuer` template (Entra: `https://login.microsoftonline.com/{tenantid}/v2.0`)."""
    fingerprint: str
    """SHA-256 of the modulus and exponent: identifies the key material, not its name."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable key set: replaced as a whole on refresh, so readers never see half of one."""

    keys: tuple[SigningKey, ...] = ()
    by_kid: Mapping[str, SigningKey] = field(default_factory=dict)
    by_x5t: Mapping[str, SigningKey] = field(default_factory=dict)
    fingerprints: frozenset[str] = frozenset()

    def find(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        # `kid` decides when present; `x5t` is the fallback for old v1 tokens that carry only it.
        if kid is not None:
            return self.by_kid.get(kid)
        if x5t is not None:
            return self.by_x5t.get(x5t)
        return None


def _b64_int(value: object) -> int | None:
    if not isinstance(value, str) or not value or len(value) > 2 * MAX_RSA_BITS // 6:
        return None
    text = value.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if raw else None


def _parse_key(jwk: object) -> SigningKey | str:
    """A usable key, or the (loggable, key-free) reason this JWK is skipped."""
    if not isinstance(jwk, Mapping):
        return "not an object"
    if jwk.get("kty") != "RSA":
        return "not RSA"
    use = jwk.get("use")
    if use is not None and use != "sig":
        return "not a signing key (use)"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or not _SIGNING_OPS.intersection(ops)):
        return "not a signing key (key_ops)"
    alg = jwk.get("alg")
    if alg is not None and alg != ALGORITHM and alg in _JWS_ALGS:
        return "for another algorithm"
    kid, x5t = jwk.get("kid"), jwk.get("x5t")
    if kid is not None and not isinstance(kid, str):
        return "non-string kid"
    if x5t is not None and not isinstance(x5t, str):
        return "non-string x5t"
    if kid is None and x5t is None:
        return "no kid or x5t"
    issuer = jwk.get("issuer")
    if issuer is not None and not isinstance(issuer, str):
        return "non-string issuer"
    n, e = _b64_int(jwk.get("n")), _b64_int(jwk.get("e"))
    if n is None or e is None:
        return "bad n/e"
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        return "key size out of range"
    try:
        public_key = RSAPublicNumbers(e, n).public_key()
    except ValueError:
        return "invalid RSA numbers"
    digest = hashlib.sha256(f"{n:x}.{e:x}".encode("ascii")).hexdigest()
    return SigningKey(kid=kid, x5t=x5t, public_key=public_key, issuer=issuer, fingerprint=digest)


def parse_jwks(document: object) -> KeySet:
    """Every usable key in a JWKS document (possibly none). Never raises on odd content."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        logger.warning("JWKS document has no 'keys' list")
        return KeySet()
    keys: list[SigningKey] = []
    for jwk in document["keys"][:_MAX_KEYS]:
        parsed = _parse_key(jwk)
        if isinstance(parsed, str):
            name = jwk.get("kid") if isinstance(jwk, Mapping) else None
            name = name if isinstance(name, str) else None
            logger.debug("skipping JWKS key %r: %s", name, parsed)
        else:
            keys.append(parsed)
    by_kid: dict[str, SigningKey] = {}
    by_x5t: dict[str, SigningKey] = {}
    for key in keys:
        # First wins on a repeated name, so a later entry cannot shadow an earlier one.
        if key.kid is not None:
            by_kid.setdefault(key.kid, key)
        if key.x5t is not None:
            by_x5t.setdefault(key.x5t, key)
    return KeySet(
        keys=tuple(keys),
        by_kid=by_kid,
        by_x5t=by_x5t,
        fingerprints=frozenset(k.fingerprint for k in keys),
    )
