"""Bearer-token extraction (grpc_obo._validation._bearer), the same for gRPC metadata and an HTTP
header: RFC 6750 errors, no token in any message."""

from __future__ import annotations

import pytest

from grpc_obo import MalformedTokenError, MissingTokenError
from grpc_obo._validation._bearer import bearer_token, bearer_token_from_header


def test_metadata_and_header_read_the_same_token() -> None:
    assert bearer_token([("x", "y"), ("authorization", "Bearer abc.def.ghi")]) == "abc.def.ghi"
    assert bearer_token_from_header("bearer   abc.def.ghi") == "abc.def.ghi"


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        ("Basic dXNlcjpwYXNz", MissingTokenError, "unsupported_scheme"),
        ("Bearer ", MalformedTokenError, "empty_token"),
        ("Bearer a b", MalformedTokenError, "malformed_header"),
        ("Bearer tøken", MalformedTokenError, "malformed_header"),
        (b"Bearer abc", MalformedTokenError, "malformed_header"),
    ],
)
def test_refusals_say_why_without_the_token(
    value: str | bytes, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as refused:
        bearer_token_from_header(value)
    assert getattr(refused.value, "reason", None) == reason
    assert "abc" not in str(refused.value) and "dXNl" not in str(refused.value)


def test_two_authorization_entries_are_refused() -> None:
    with pytest.raises(MalformedTokenError) as refused:
        bearer_token([("authorization", "Bearer a"), ("authorization", "Bearer b")])
    assert refused.value.reason == "multiple_authorization"
    with pytest.raises(MissingTokenError):
        bearer_token([])
