"""No token text in exception messages, reprs or logs, for every token these tests mint.

Runs the whole catalogue of good and bad tokens from the other test modules (plus the recorded
Entra tokens and a remote key source that fails) with logging at DEBUG, then searches every
exception text and every captured log record for each token and for its payload and signature
segments."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import grpc_obo
from grpc_obo import TokenValidator
from tests.validation import test_jose, test_rules
from tests.validation.conftest import KeyServer
from tests.validation.tokens import MINTED, mint, record, sign_segments, v2_claims


@pytest.fixture
def recorded_tokens(recorded_dir: Path) -> list[str]:
    return [record(path.read_text().strip()) for path in sorted(recorded_dir.glob("*.jwt"))]


def _texts_of(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), *map(str, exc.args)]
    for name in ("message", "reason", "claim"):
        value = getattr(exc, name, None)
        if value is not None:
            texts.append(str(value))
    return texts


def _assert_no_token(texts: list[str], tokens: list[str]) -> None:
    blob = "\n".join(texts)
    for token in tokens:
        pieces = [token, *(p for p in token.split(".")[1:] if len(p) >= 16)]
        for piece in pieces:
            assert piece not in blob, "token text leaked"


async def test_no_token_in_exceptions_or_logs(
    make_validator: Callable[..., TokenValidator],
    make_remote_validator: Callable[..., TokenValidator],
    key_server: KeyServer,
    recorded_tokens: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    validator = make_validator()
    corpus: list[str] = [mint(v2_claims())]
    corpus += [mint(claims) for _, claims, _, _ in test_rules.BAD_CLAIMS]
    corpus += [sign_segments(h, v2_claims()) for _, h, _ in test_jose.HEADER_CASES]
    good = mint(v2_claims())
    corpus += [record(mangle(good)) for _, mangle, _ in test_jose.STRUCTURE_CASES]
    corpus += recorded_tokens

    texts: list[str] = []
    for token in corpus:
        try:
            identity = await validator.validate(token)
        except grpc_obo.GrpcOboError as exc:
            texts += _texts_of(exc)
        else:
            texts += [repr(identity), str(identity), repr(identity.token)]

    # A remote source that cannot fetch logs warnings: they must not carry tokens either.
    key_server.down = True
    remote = make_remote_validator()
    for token in corpus[:5]:
        try:
            await remote.validate(token)
        except grpc_obo.GrpcOboError as exc:
            texts += _texts_of(exc)

    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    assert any("signing key refresh failed" in t for t in texts)  # the logs were captured
    _assert_no_token(texts, corpus + MINTED)
