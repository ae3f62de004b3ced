"""`_hashing`: SHA-256 from a copied template must equal a fresh hash, call after call."""

from __future__ import annotations

import hashlib
import threading

import pytest

from grpc_obo._hashing import sha256_digest, sha256_hex

# FIPS 180-2 test vectors.
VECTORS = [
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_known_vectors(data: bytes, expected: str) -> None:
    assert sha256_hex(data) == expected
    assert sha256_digest(data) == bytes.fromhex(expected)


def test_each_call_starts_from_an_empty_state() -> None:
    # Interleaved calls: a template that kept any input would change every later digest.
    for data in [b"a" * 1300, b"b", b"", b"a" * 1300]:
        assert sha256_digest(data) == hashlib.sha256(data).digest()
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_threads_share_the_template_safely() -> None:
    inputs = [bytes([i]) * (100 + i) for i in range(64)]
    wrong: list[bytes] = []

    def work() -> None:
        for _ in range(200):
            for data in inputs:
                if sha256_digest(data) != hashlib.sha256(data).digest():
                    wrong.append(data)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
