"""`TokenSealer`: AES-256-GCM bound to the cache key, with key ids for rotation."""

from __future__ import annotations

import pickle

import pytest

from grpc_obo import ConfigurationError
from grpc_obo._exchange import TokenSealer

KEY = bytes(range(32))


def test_round_trip_and_random_nonce() -> None:
    sealer = TokenSealer(KEY)
    first = sealer.seal("k", b"secret")
    second = sealer.seal("k", b"secret")
    assert first != second
    assert b"secret" not in first
    assert sealer.open("k", first) == b"secret"


def test_value_moved_to_another_key_does_not_open() -> None:
    sealer = TokenSealer(KEY)
    assert sealer.open("other", sealer.seal("k", b"secret")) is None


def test_any_flipped_bit_does_not_open() -> None:
    sealer = TokenSealer(KEY)
    blob = sealer.seal("k", b"secret")
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        assert sealer.open("k", bytes(tampered)) is None


def test_wrong_key_truncated_or_garbage_does_not_open() -> None:
    blob = TokenSealer(KEY).seal("k", b"secret")
    assert TokenSealer(bytes(32)).open("k", blob) is None
    assert TokenSealer(KEY).open("k", blob[:20]) is None
    assert TokenSealer(KEY).open("k", b"") is None
    assert TokenSealer(KEY).open("k", b"\x02" + blob[1:]) is None


def test_rotation_opens_old_values_and_seals_with_the_new_key() -> None:
    old = TokenSealer(KEY, key_id=1)
    rotated = TokenSealer(bytes(32), key_id=2, previous={1: KEY})
    assert rotated.open("k", old.seal("k", b"secret")) == b"secret"
    assert old.open("k", rotated.seal("k", b"secret")) is None


def test_bad_keys_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError):
        TokenSealer(b"short")
    with pytest.raises(ConfigurationError):
        TokenSealer(KEY, key_id=256)
    with pytest.raises(ConfigurationError):
        TokenSealer(KEY, key_id=1, previous={1: KEY})


def test_key_material_never_shows_or_pickles() -> None:
    sealer = TokenSealer(TokenSealer.generate_key())
    assert "key_id=1" in repr(sealer)
    with pytest.raises(TypeError):
        pickle.dumps(sealer)
