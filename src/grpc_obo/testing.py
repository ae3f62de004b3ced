"""pytest plugin for grpc_obo's suite and for users' own tests (registered by entry point).

Fixtures:

- `grpc_obo_authority`: the dev authority (HTTPS on 127.0.0.1, demo world), started once per
  session in its own thread so sync code (MSAL) and any event loop can use it; faults and the
  request log are cleared after each test.
- `grpc_obo_private_authority`: a fresh authority for one test (for key rotation or changed
  registrations that must not leak into other tests).
- `grpc_obo_user_token(user="alice", audience="original", ...)`: mint a delegated access token.
- `grpc_obo_app_token(client="daemon", audience="downstream", ...)`: mint an app-only token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from grpc_obo.devauthority import DevAuthority

__all__ = [
    "grpc_obo_app_token",
    "grpc_obo_authority",
    "grpc_obo_authority_session",
    "grpc_obo_private_authority",
    "grpc_obo_user_token",
]


@pytest.fixture(scope="session")
def grpc_obo_authority_session() -> Iterator[DevAuthority]:
    """One dev authority for the whole session (prefer `grpc_obo_authority` in tests)."""
    with DevAuthority().running_in_thread() as authority:
        yield authority


@pytest.fixture
def grpc_obo_authority(grpc_obo_authority_session: DevAuthority) -> Iterator[DevAuthority]:
    """The session's dev authority, with faults and the request log reset after the test."""
    authority = grpc_obo_authority_session
    authority.requests.clear()
    yield authority
    authority.faults.clear()
    authority.requests.clear()


@pytest.fixture
def grpc_obo_private_authority() -> Iterator[DevAuthority]:
    """A dev authority of this test's own: rotate keys or change registrations freely."""
    with DevAuthority().running_in_thread() as authority:
        yield authority


@pytest.fixture
def grpc_obo_user_token(grpc_obo_authority: DevAuthority) -> Callable[..., str]:
    """`mint(user="alice", *, audience="original", client="client", scopes=None, ...)`."""
    return grpc_obo_authority.mint_user_token


@pytest.fixture
def grpc_obo_app_token(grpc_obo_authority: DevAuthority) -> Callable[..., str]:
    """`mint(client="daemon", *, audience="downstream", roles=None, ...)`."""
    return grpc_obo_authority.mint_app_token
