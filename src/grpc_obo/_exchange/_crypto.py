"""`TokenSealer`: authenticated encryption of cache values that leave the process (Redis).

Layout of a sealed value (bytes):

    0x01 | key id (1 byte) | nonce (12 bytes, random) | AES-256-GCM ciphertext + 16-byte tag

The associated data is the format header plus the cache key the value is stored under, so a value
copied to another key, a flipped bit, or a value sealed with a key we do not hold all fail to
open. Rotation: seal with the new key (new `key_id`) and keep the old one in `previous` until
entries sealed with it have expired (at most one token lifetime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from grpc_obo._errors import ConfigurationError

__all__ = ["TokenSealer"]

_FORMAT = 0x01
_NONCE_BYTES = 12
_HEADER_BYTES = 2 + _NONCE_BYTES
_TAG_BYTES = 16
_AD_CONTEXT = b"grpc_obo:sealed-token:v1|"


class TokenSealer:
    """Seals and opens cache values with AES-256-GCM; the keys never appear in a repr."""

    __slots__ = ("_current", "_key_id", "_keys")

    def __init__(
        self, key: bytes, *, key_id: int = 1, previous: Mapping[int, bytes] | None = None
    ) -> None:
        keys = {_key_id("key_id", key_id): _key("key", key)}
        if previous is not None and not isinstance(previous, Mapping):
            raise ConfigurationError(
                "previous must be a mapping of key ids (0-255) to 32-byte keys",
                setting="previous",
            )
        for kid, material in (previous or {}).items():
            kid = _key_id("previous", kid)
            if kid in keys:
                raise ConfigurationError(
                    "previous lists key_id, the current key's id: each key id names one key",
                    setting="previous",
                )
            keys[kid] = _key("previous", material)
        self._keys = {kid: AESGCM(material) for kid, material in keys.items()}
        self._key_id = key_id
        self._current = self._keys[key_id]

    @staticmethod
    def generate_key() -> bytes:
        """A fresh random 256-bit key (store it in your secret store, share it across replicas)."""
        return AESGCM.generate_key(bit_length=256)

    def seal(self, cache_key: str, plaintext: bytes) -> bytes:
        header = bytes((_FORMAT, self._key_id))
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext, _associated_data(header, cache_key))
        return header + nonce + sealed

    def open(self, cache_key: str, blob: bytes) -> bytes | None:
        """The plaintext, or None if the value is malformed, tampered, moved, or foreign."""
        if len(blob) < _HEADER_BYTES + _TAG_BYTES or blob[0] != _FORMAT:
            return None
        aead = self._keys.get(blob[1])
        if aead is None:
            return None
        nonce = blob[2:_HEADER_BYTES]
        try:
            return aead.decrypt(nonce, blob[_HEADER_BYTES:], _associated_data(blob[:2], cache_key))
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"TokenSealer(key_id={self._key_id}, key_ids={sorted(self._keys)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TokenSealer holds key material and is not picklable")


def _key_id(setting: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ConfigurationError(
            f"{setting}: cache encryption key ids are whole numbers from 0 to 255", setting=setting
        )
    return value


def _key(setting: str, value: object) -> bytes:
    # NOTE: the message never shows the value: it is key material, or meant to be.
    if not isinstance(value, bytes) or len(value) != 32:
        raise ConfigurationError(
            f"{setting}: cache encryption keys are 32 bytes (AES-256)", setting=setting
        )
    return value


def _associated_data(header: bytes, cache_key: str) -> bytes:
    return _AD_CONTEXT + header + cache_key.encode("utf-8")
