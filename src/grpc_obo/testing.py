"""pytest plugin for grpc_obo's suite and for users' own tests (registered by entry point).

Fixtures:

- `grpc_obo_world` (session): the registrations the authorities serve. The demo world
  (`default_world()`), or the world file named by the `grpc_obo_world` ini option (TOML or
  JSON, relative to the ini file: `grpc_obo_world = tests/world.toml`). Override this fixture
  in a `conftest.py` to build a world in code.
- `grpc_obo_authority`: the dev authority (HTTPS on 127.0.0.1, that world), started once per
  session in its own thread so sync code (MSAL) and any event loop can use it; faults and the
  request log are cleared after each test.
- `grpc_obo_private_authority`: a fresh authority for one test, on a fresh copy of the world as
  it was before any test changed it (for key rotation or changed registrations that must not
  leak into other tests).
- `grpc_obo_user_token(user="alice", *, audience="original", client="client", ...)`: mint a
  delegated access token for `user`, issued to the client app `client` (the app users sign in
  with) for the API `audience`.
- `grpc_obo_app_token(client="daemon", *, audience="downstream", roles=None, ...)`: mint an
  app-only token of the app `client` for the API `audience`.
  The defaults name the demo world's apps and users: with a world of your own, name yours
  (`grpc_obo_user_token("alice", audience="orders", client="web")`). An app the world lacks
  raises `KeyError` naming the argument and listing the world's apps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grpc_obo.devauthority import DevAuthority, World, default_world, load_world

__all__ = [
    "grpc_obo_app_token",
    "grpc_obo_authority",
    "grpc_obo_authority_session",
    "grpc_obo_private_authority",
    "grpc_obo_user_token",
    "grpc_obo_world",
]

WORLD_INI = "grpc_obo_world"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        WORLD_INI,
        "world file (TOML or JSON) for the grpc_obo dev authority fixtures, relative to the ini "
        "file; default: the demo world",
        default="",
    )


def _configured_world(config: pytest.Config) -> World:
    value = str(config.getini(WORLD_INI) or "").strip()
    if not value:
        return default_world()
    path = Path(value)
    if not path.is_absolute():
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        path = base / path
    return load_world(path)


@pytest.fixture(scope="session")
def grpc_obo_world(pytestconfig: pytest.Config) -> World:
    """The world the dev authority fixtures serve: the ini option's file, or the demo world."""
    return _configured_world(pytestconfig)


@pytest.fixture(scope="session")
def _grpc_obo_pristine_world(grpc_obo_world: World) -> World:
    # Taken before the session authority serves (and tests change) the world.
    return copy.deepcopy(grpc_obo_world)


@pytest.fixture(scope="session")
def grpc_obo_authority_session(
    _grpc_obo_pristine_world: World, grpc_obo_world: World
) -> Iterator[DevAuthority]:
    """One dev authority for the whole session (prefer `grpc_obo_authority` in tests)."""
    with DevAuthority(world=grpc_obo_world).running_in_thread() as authority:
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
def grpc_obo_private_authority(_grpc_obo_pristine_world: World) -> Iterator[DevAuthority]:
    """A dev authority of this test's own: rotate keys or change registrations freely."""
    world = copy.deepcopy(_grpc_obo_pristine_world)
    with DevAuthority(world=world).running_in_thread() as authority:
        yield authority


def _apps_named(world: World, **arguments: str) -> None:
    """KeyError naming the fixture argument whose app `world` lacks, and the apps it has."""
    for argument, name in arguments.items():
        if world.find_app(name) is None:
            apps = ", ".join(app.name for app in world.apps) or "none"
            raise KeyError(
                f"{argument}={name!r}: the world has no app called {name!r} (its apps: {apps}); "
                f"pass {argument}=<one of them>"
            )


@pytest.fixture
def grpc_obo_user_token(grpc_obo_authority: DevAuthority) -> Callable[..., str]:
    """`mint(user="alice", *, audience="original", client="client", scopes=None, ...)`.

    `client` is the app the user signed in with (the token's `azp`), `audience` the API the
    token is for; both are app names (or client ids) of the world.
    """
    authority = grpc_obo_authority

    def mint(
        user: str = "alice", *, audience: str = "original", client: str = "client", **options: Any
    ) -> str:
        _apps_named(authority.world, client=client, audience=audience)
        return authority.mint_user_token(user, audience=audience, client=client, **options)

    return mint


@pytest.fixture
def grpc_obo_app_token(grpc_obo_authority: DevAuthority) -> Callable[..., str]:
    """`mint(client="daemon", *, audience="downstream", roles=None, ...)`: `client` is the
    calling application, `audience` the API; both are app names (or client ids) of the world."""
    authority = grpc_obo_authority

    def mint(client: str = "daemon", *, audience: str = "downstream", **options: Any) -> str:
        _apps_named(authority.world, client=client, audience=audience)
        return authority.mint_app_token(client, audience=audience, **options)

    return mint
