"""The authority's token-signing keys and their rollover, and the JWKS document it publishes.

Rollover follows Entra's: a new key is published before it signs anything (so validators can
fetch it ahead of time), then becomes the signing key, and the old key is retired from the
JWKS later. Each key carries a self-signed certificate so the JWKS has `x5t` and `x5c` like Entra's.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)

    @property
    def x5t(self) -> str:
        return b64url(self.certificate.fingerprint(hashes.SHA1()))  # noqa: S303 (x5t is SHA-1)

    def jwk(self, issuer_template: str) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": b64url_uint(numbers.n),
            "e": b64url_uint(numbers.e),
            "x5c": [base64.b64encode(der).decode()],
            "issuer": issuer_template,
        }

    @staticmethod
    def generate(key_size: int = 2048) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpc_obo dev authority")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        # Like Entra, the kid is derived from the certificate (there: its x5t), so it is stable.
        kid = b64url(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())[:27]
        return SigningKey(kid=kid, private_key=key, certificate=cert)


class KeyRing:
    """The published keys, one of which signs. Thread-safe: tests rotate from other threads."""

    def __init__(self, key_size: int = 2048) -> None:
        self._key_size = key_size
        self._lock = threading.Lock()
        first = SigningKey.generate(key_size)
        self._published: list[SigningKey] = [first]
        self._signing = first

    @property
    def signing_key(self) -> SigningKey:
        with self._lock:
            return self._signing

    @property
    def published_kids(self) -> list[str]:
        with self._lock:
            return [k.kid for k in self._published]

    def find(self, kid: str) -> SigningKey | None:
        with self._lock:
            return next((k for k in self._published if k.kid == kid), None)

    def publish_next_key(self) -> str:
        """Add a new key to the JWKS without signing with it yet; returns its kid."""
        key = SigningKey.generate(self._key_size)
        with self._lock:
            self._published.append(key)
        return key.kid

    def switch_signing_key(self, kid: str | None = None) -> str:
        """Sign with a published key (default: the newest); returns its kid."""
        with self._lock:
            target = self._published[-1] if kid is None else None
            if target is None:
                target = next((k for k in self._published if k.kid == kid), None)
            if target is None:
                raise KeyError("that key is not published")
            self._signing = target
            return target.kid

    def retire_key(self, kid: str | None = None) -> str:
        """Remove a key from the JWKS (default: the oldest that is not signing)."""
        with self._lock:
            candidates = [k for k in self._published if k is not self._signing]
            if kid is not None:
                candidates = [k for k in candidates if k.kid == kid]
            if not candidates:
                raise KeyError("no retirable key (the signing key cannot be retired)")
            self._published.remove(candidates[0])
            return candidates[0].kid

    def rotate(self) -> str:
        """Publish, switch and retire in one step (an abrupt rollover); returns the new kid."""
        new_kid = self.publish_next_key()
        old = self.signing_key.kid
        self.switch_signing_key(new_kid)
        self.retire_key(old)
        return new_kid

    def jwks(self, issuer_template: str) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.jwk(issuer_template) for k in self._published]}
