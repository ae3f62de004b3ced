"""The grants the exchanger core makes, and the one check of a scope list every transport uses.

    Grant            who a token is for, which tenant issues it, its cache key, the MSAL call
      ON_BEHALF_OF        the verified user in context (never an app fallback): that user's
                          tenant, a key over their token, `acquire_token_on_behalf_of`
      CLIENT_CREDENTIALS  the service itself, whoever is in context: the home tenant,
                          one `<resource>/.default` scope, `acquire_token_for_client`

Pure decisions, no I/O: the exchanger (`_exchanger.py`) does the caching and the calling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from grpc_obo._errors import AppTokenNotAllowedError, ConfigurationError, MissingIdentityError
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._keys import obo_cache_key
from grpc_obo._identity import Identity, current_identity

__all__ = ["CLIENT_CREDENTIALS", "ON_BEHALF_OF", "Grant", "scope_tuple"]

APP_KEY_PREFIX = "grpc_obo:app:v1:"


def scope_tuple(scopes: Iterable[str], what: str = "scopes") -> tuple[str, ...]:
    """`scopes` as a tuple, or a `ConfigurationError` naming `what`: a non-empty collection (not
    a string, which would iterate as characters) of non-empty scope strings without spaces.

    `what` is the setting (`scopes`), or one entry of it (`method_scopes['pkg.Service']`)."""
    setting = _setting(what)
    if isinstance(scopes, str):
        raise ConfigurationError(
            f"{what} must be a list of scope strings, not a string", setting=setting
        )
    try:
        result = tuple(scopes)
    except TypeError:
        raise ConfigurationError(
            f"{what} must be a list of scope strings", setting=setting
        ) from None
    if not result or not all(isinstance(s, str) and s and not _spaced(s) for s in result):
        raise ConfigurationError(
            f"{what} must be a non-empty list of scope strings without spaces", setting=setting
        )
    return result


def _setting(what: str) -> str:
    """The setting `what` is, or is an entry of: `method_scopes['a.B']` -> `method_scopes`."""
    return what.partition("[")[0]


_SPACE = re.compile(r"\s")  # str.isspace()'s characters: a scope list is space-separated


def _spaced(scope: str) -> bool:
    # NOTE: one regex search in C, not a generator over the characters: a scope list given as
    # a list (not memoized, see Exchanger.scopes) is checked on every acquire().
    return _SPACE.search(scope) is not None


class Grant(Protocol):
    """What differs between On-Behalf-Of and client credentials; the rest is the core's."""

    name: str
    """The grant as telemetry names it (a fixed vocabulary): on_behalf_of, client_credentials."""
    as_user: bool
    """Its tokens carry the user's identity (the relay and claims memory act on them)."""
    consent: str
    """Who must grant a missing consent (the end of `ConsentRequiredError`'s message)."""

    def subject(self, identity: Identity | None) -> Identity | None:
        """Whom the token is for (default: the identity in context), or an error."""
        ...

    def check(self, scopes: tuple[str, ...], what: str) -> None:
        """Raise `ConfigurationError` (naming `what`, as `scope_tuple`) for scopes this grant
        cannot ask for."""
        ...

    def key(
        self,
        client: ConfidentialClient,
        subject: Identity | None,
        scopes: tuple[str, ...],
        claims: str | None,
    ) -> str:
        """The cache key: every input the authority's answer depends on (hashed)."""
        ...

    def tenant(self, client: ConfidentialClient, subject: Identity | None) -> str: ...

    def request(
        self, subject: Identity | None, scopes: tuple[str, ...], claims: str | None
    ) -> Callable[[Any], Any]:
        """The MSAL call, given the app (run in a worker thread)."""
        ...

    def describe(self, subject: Identity | None) -> str:
        """For the DEBUG line of an exchange: a kind and a principal, never a token."""
        ...


class _OnBehalfOf:
    name = "on_behalf_of"
    as_user = True
    consent = "the user or an administrator must grant it to this API"

    def subject(self, identity: Identity | None) -> Identity:
        identity = identity if identity is not None else current_identity()
        if identity is None:
            raise MissingIdentityError(
                "no verified user identity in this context: On-Behalf-Of runs only inside an "
                "authenticated call (never falls back to an app token)"
            )
        if not identity.is_user:
            raise AppTokenNotAllowedError(
                "the caller is an application: there is no user to act on behalf of"
            )
        return identity

    def check(self, scopes: tuple[str, ...], what: str) -> None:
        return None

    def key(
        self,
        client: ConfidentialClient,
        subject: Identity | None,
        scopes: tuple[str, ...],
        claims: str | None,
    ) -> str:
        user = self.subject(subject)
        return obo_cache_key(
            assertion=user.token,
            client_id=client.client_id,
            authority=client.authority_for(user.tid),
            scopes=scopes,
            claims=claims,
        )

    def tenant(self, client: ConfidentialClient, subject: Identity | None) -> str:
        return self.subject(subject).tid

    def request(
        self, subject: Identity | None, scopes: tuple[str, ...], claims: str | None
    ) -> Callable[[Any], Any]:
        assertion = self.subject(subject).token
        wanted = list(scopes)
        return lambda app: app.acquire_token_on_behalf_of(
            assertion.reveal(), wanted, claims_challenge=claims
        )

    def describe(self, subject: Identity | None) -> str:
        return f"On-Behalf-Of exchange for {self.subject(subject).principal}"


class _ClientCredentials:
    name = "client_credentials"
    as_user = False
    consent = "an administrator must grant it to this app"

    def subject(self, identity: Identity | None) -> None:
        return None  # the service itself: whoever is in context plays no part

    def check(self, scopes: tuple[str, ...], what: str) -> None:
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise ConfigurationError(
                f"{what}: app-only tokens take exactly one '<resource>/.default' scope",
                setting=_setting(what),
            )

    def key(
        self,
        client: ConfidentialClient,
        subject: Identity | None,
        scopes: tuple[str, ...],
        claims: str | None,
    ) -> str:
        # Nothing secret in it: the client, its authority and the scope are configuration.
        return APP_KEY_PREFIX + "|".join((client.client_id, client.authority, *scopes))

    def tenant(self, client: ConfidentialClient, subject: Identity | None) -> str:
        return client.tenant

    def request(
        self, subject: Identity | None, scopes: tuple[str, ...], claims: str | None
    ) -> Callable[[Any], Any]:
        wanted = list(scopes)
        return lambda app: app.acquire_token_for_client(wanted)

    def describe(self, subject: Identity | None) -> str:
        return "client-credentials request"


ON_BEHALF_OF: Grant = _OnBehalfOf()
CLIENT_CREDENTIALS: Grant = _ClientCredentials()
