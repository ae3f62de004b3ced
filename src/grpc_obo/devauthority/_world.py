"""What the dev authority knows, and how it changes at run time: a `World` holds the tenants,
app registrations and users (their records are in `_registrations.py`), answers look-ups by
client id, App ID URI, username or oid, and changes through `add_app`, `remove_app`,
`add_user`, `grant_consent`, `revoke_consent`, `without_consent`, `add_federated_credential`,
`revoke_sessions` and `set_password`; a running authority sees each change on its next request.
`default_world()` (`_default_world.py`) is the demo world the examples use; `load_world()`
(`_worldfile.py`) reads one from a TOML or JSON file.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from grpc_obo.devauthority._registrations import (
    TOKEN_EXCHANGE_AUDIENCE,
    App,
    ClientCertificate,
    FederatedCredential,
    Tenant,
    User,
    check_redirect_uri,
    microsoft_graph,
    new_guid,
    new_secret,
)

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class World:
    """Everything the authority knows. Look-ups are by client id / username / oid.

    `apps` are the world's own registrations; `graph` is Microsoft Graph, which every tenant
    has (as in Entra, it is not one of your app registrations, but `app("graph")`,
    `grant_consent(client, "graph", ...)` and world files' `api_permissions` name it).
    """

    tenants: list[Tenant]
    apps: list[App]
    users: list[User]
    graph: App = field(default_factory=microsoft_graph)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    """What `revoke_sessions` and `set_password` stamp; a `DevAuthority` sets its own clock."""

    def _all_apps(self) -> list[App]:
        return [*self.apps, self.graph]

    @property
    def home_tenant(self) -> Tenant:
        return self.tenants[0]

    def tenant(self, tenant_id: str) -> Tenant | None:
        return next((t for t in self.tenants if t.id == tenant_id.lower()), None)

    def find_tenant(self, name_or_id: str) -> Tenant | None:
        """The tenant with this GUID or name (case-insensitive)."""
        key = name_or_id.lower()
        return next((t for t in self.tenants if key in (t.id, t.name.lower())), None)

    def tenant_for_username(self, username: str) -> Tenant:
        """The tenant named like the first label of the username's domain
        (`carol@fabrikam.example` -> `fabrikam`), else the home tenant."""
        label = username.rsplit("@", 1)[-1].split(".", 1)[0].lower()
        return next((t for t in self.tenants if t.name.lower() == label), self.home_tenant)

    def app(self, name_or_client_id: str) -> App:
        found = self.find_app(name_or_client_id)
        if found is None:
            raise KeyError(f"no app registered as {name_or_client_id!r}")
        return found

    def find_app(self, name_or_client_id: str) -> App | None:
        key = name_or_client_id.lower()
        return next((a for a in self._all_apps() if key in (a.client_id, a.name.lower())), None)

    def resource_app(self, identifier: str) -> App | None:
        """The app a scope prefix or `resource` names (client id GUID or App ID URI)."""
        ident = identifier.rstrip("/")
        return next(
            (
                a
                for a in self._all_apps()
                if ident in a.identifiers() or ident.lower() == a.client_id
            ),
            None,
        )

    def identifier_owner(self, app: App) -> App | None:
        """Another app already named by one of `app`'s identifiers (its App ID URI, or
        `api://<guid>` of another app's client id), compared as Entra does: case-insensitive,
        without a trailing slash."""

        def norm(values: Iterable[str]) -> set[str]:
            return {v.rstrip("/").lower() for v in values}

        mine = norm(app.identifiers())
        return next(
            (o for o in self._all_apps() if o is not app and mine & norm(o.identifiers())),
            None,
        )

    # -- registrations at run time ---------------------------------------------------------

    def add_app(
        self,
        name: str,
        *,
        client_id: str | None = None,
        scopes: Iterable[str] = (),
        app_roles: Iterable[str] = (),
        secret: str | bool | None = None,
        certificate: bool = False,
        public_client: bool = False,
        api_permissions: Mapping[str, Iterable[str]] | None = None,
        pre_authorized: Mapping[str, Iterable[str]] | None = None,
        app_role_assignments: Mapping[str, Iterable[str]] | None = None,
        app_id_uri: str | None = None,
        access_token_version: int = 2,
        tenant_id: str | None = None,
        multi_tenant: bool = True,
        redirect_uris: Iterable[str] = (),
    ) -> App:
        """Register an app (an API, a client or both) and return it; checked before it is added.

        - `scopes` / `app_roles`: the delegated scopes and app roles it exposes as an API (its
          App ID URI is then `api://<client id>` unless `app_id_uri` says otherwise).
        - `secret`: None gives a confidential app one new secret and a public client none;
          True / False force one / none; a string is used as the secret.
        - `api_permissions`: API (name or client id) -> delegated scopes of that API this app
          holds, admin-consented (what it needs to call that API On-Behalf-Of a user).
        - `pre_authorized`: client app (name or client id) -> scopes of *this* API that client
          may get without consent (`preAuthorizedApplications`).
        - `app_role_assignments`: API -> app roles of that API granted to this app.
        - `redirect_uris`: where the authorization code flow may redirect (https, or http
          on localhost / 127.0.0.1 only).
        - `multi_tenant`: False makes it single-tenant: the authority refuses it in any other
          tenant (AADSTS700016) and to users of other tenants (AADSTS50020).

        To let an existing app call the new API, `grant_consent(existing, name, [...])`.
        Raises `ValueError` for a taken name or client id, a scope or role the API does not
        expose, or credentials on a public client; `KeyError` for an unknown app.
        """
        if not name or self.find_app(name) is not None or _GUID.match(name.lower()):
            raise ValueError(f"app name {name!r} is empty, a GUID, or taken")
        new_id = (client_id or new_guid()).lower()
        if not _GUID.match(new_id) or self.find_app(new_id) is not None:
            raise ValueError(f"client id {client_id!r} is not a GUID or is taken")
        if access_token_version not in (1, 2):
            raise ValueError("access_token_version must be 1 or 2")
        if public_client and (secret not in (None, False) or certificate):
            raise ValueError("a public client has no secret or certificate")
        if isinstance(secret, str):
            app_secrets = [secret]
        elif secret or (secret is None and not public_client):
            app_secrets = [new_secret()]
        else:
            app_secrets = []
        app = App(
            name=name,
            client_id=new_id,
            tenant_id=tenant_id or self.home_tenant.id,
            public_client=public_client,
            secrets=app_secrets,
            certificates=[ClientCertificate.generate(name)] if certificate else [],
            app_id_uri=app_id_uri,
            scopes=frozenset(scopes),
            app_roles=frozenset(app_roles),
            access_token_version=access_token_version,
            multi_tenant=multi_tenant,
            redirect_uris=tuple(check_redirect_uri(u) for u in redirect_uris),
        )
        taken = self.identifier_owner(app)
        if taken is not None:
            raise ValueError(f"App ID URI {app_id_uri!r} already names the app {taken.name!r}")
        for api, wanted in (api_permissions or {}).items():
            resource = self.app(api)
            app.api_permissions[resource.client_id] = _exposed(resource, wanted, "scope")
        for api, wanted in (app_role_assignments or {}).items():
            resource = self.app(api)
            app.app_role_assignments[resource.client_id] = _exposed(resource, wanted, "role")
        for client, wanted in (pre_authorized or {}).items():
            app.pre_authorized[self.app(client).client_id] = _exposed(app, wanted, "scope")
        self.apps.append(app)
        return app

    def remove_app(self, name_or_client_id: str) -> None:
        """Delete an app registration and every permission, pre-authorization and role
        assignment that names it. Tokens already issued stay valid until they expire."""
        app = self.app(name_or_client_id)
        if app is self.graph:
            raise ValueError("Microsoft Graph is not an app registration of this world")
        self.apps = [a for a in self.apps if a is not app]
        for other in self.apps:
            for grants in (other.api_permissions, other.pre_authorized, other.app_role_assignments):
                grants.pop(app.client_id, None)
        for user in self.users:
            user.app_roles.pop(app.client_id, None)

    def grant_consent(self, client: str, api: str, scopes: Iterable[str]) -> None:
        """Admin consent: `client` may get these delegated scopes of `api` for every user.

        Adds to what is consented already. Apps by name or client id; scopes by their short
        name (`Data.Read`), each one `api` exposes, else `ValueError`.
        """
        client_app, resource = self.app(client), self.app(api)
        granted = _exposed(resource, scopes, "scope")
        held = client_app.api_permissions.get(resource.client_id, frozenset())
        client_app.api_permissions[resource.client_id] = held | granted

    def revoke_consent(self, client: str, api: str, scopes: Iterable[str] | None = None) -> None:
        """Take back `client`'s delegated permission on `api`: these scopes, or all (None).

        Both ways a client holds a scope without asking the user go: the consent grant and the
        API's pre-authorization of the client. A token request for those scopes (sign-in,
        refresh or On-Behalf-Of) is then refused as Entra does, `invalid_grant` with suberror
        `consent_required` (AADSTS65001), until `grant_consent` gives them back.
        """
        client_app, resource = self.app(client), self.app(api)
        taken = resource.scopes if scopes is None else _exposed(resource, scopes, "scope")
        for grants, key in (
            (client_app.api_permissions, resource.client_id),
            (resource.pre_authorized, client_app.client_id),
        ):
            left = grants.get(key, frozenset()) - taken
            if left:
                grants[key] = left
            else:
                grants.pop(key, None)

    @contextlib.contextmanager
    def without_consent(
        self, client: str, api: str, scopes: Iterable[str] | None = None
    ) -> Iterator[None]:
        """`revoke_consent` for the duration of a `with` block, then put back exactly what
        `client` held on `api` before (consent and pre-authorization), for shared worlds."""
        client_app, resource = self.app(client), self.app(api)
        consented = client_app.api_permissions.get(resource.client_id)
        pre_authorized = resource.pre_authorized.get(client_app.client_id)
        self.revoke_consent(client, api, scopes)
        try:
            yield
        finally:
            for grants, key, before in (
                (client_app.api_permissions, resource.client_id, consented),
                (resource.pre_authorized, client_app.client_id, pre_authorized),
            ):
                if before is None:
                    grants.pop(key, None)
                else:
                    grants[key] = before

    def add_federated_credential(
        self,
        app: str,
        *,
        issuer: str,
        subject: str,
        audiences: Iterable[str] = (TOKEN_EXCHANGE_AUDIENCE,),
        name: str | None = None,
    ) -> FederatedCredential:
        """Give `app` (name or client id) a federated identity credential and return it.

        A workload then authenticates as `app` with a token from `issuer` whose `sub` is
        `subject` and whose `aud` holds one of `audiences`, and no secret or key. ValueError for
        a public client, an issuer that is not https (or `{authority_host}...`), an empty
        subject or audience list, or a taken name; KeyError for an unknown app.
        """
        found = self.app(app)
        wanted = tuple([audiences] if isinstance(audiences, str) else audiences)
        if found.public_client:
            raise ValueError("a public client has no credentials")
        if not (issuer.startswith("https://") or issuer.startswith("{authority_host}")):
            raise ValueError(f"issuer {issuer!r} must be an https URL")
        if not subject or not wanted or not all(isinstance(a, str) and a for a in wanted):
            raise ValueError("a federated credential needs a subject and at least one audience")
        label = name or f"{found.name}-{len(found.federated_credentials) + 1}"
        if any(f.name == label for f in found.federated_credentials):
            raise ValueError(f"{found.name!r} has a federated credential named {label!r}")
        credential = FederatedCredential(label, issuer, subject, wanted)
        found.federated_credentials.append(credential)
        return credential

    def add_user(
        self,
        username: str,
        *,
        tenant: str | None = None,
        password: str | None = None,
        oid: str | None = None,
        display_name: str | None = None,
        app_roles: Mapping[str, Iterable[str]] | None = None,
    ) -> User:
        """Register a user and return it (password and oid generated unless given).

        `username` is a full `name@domain`; `tenant` (name or GUID) defaults to the tenant
        named like the domain's first label, else the home tenant. `app_roles`: API (name or
        client id) -> app roles of that API assigned to the user. Raises `ValueError` for a
        taken username or oid, a role the API does not define; `KeyError` for an unknown tenant
        or app.
        """
        if not isinstance(username, str) or username.count("@") != 1 or username[0] == "@":
            raise ValueError("a username is a full name@domain")
        if username.endswith("@") or any(
            u.username.lower() == username.lower() for u in self.users
        ):
            raise ValueError(f"username {username!r} is incomplete or taken")
        if tenant is None:
            home = self.tenant_for_username(username)
        else:
            found = self.find_tenant(tenant)
            if found is None:
                raise KeyError(f"no tenant named {tenant!r}")
            home = found
        new_oid = (oid or new_guid()).lower()
        if not _GUID.match(new_oid) or self.find_user(new_oid) is not None:
            raise ValueError(f"oid {oid!r} is not a GUID or is taken")
        user = User(
            username=username,
            oid=new_oid,
            tenant_id=home.id,
            display_name=display_name or username.split("@", 1)[0].capitalize(),
        )
        if password is not None:
            if not password:
                raise ValueError("a password must not be empty")
            user.password = password
        for api, roles in (app_roles or {}).items():
            resource = self.app(api)
            user.app_roles[resource.client_id] = _exposed(resource, roles, "role")
        self.users.append(user)
        return user

    def revoke_sessions(self, name_or_oid: str) -> User:
        """Entra's "Revoke sessions" (`revokeSignInSessions`): every refresh token of the user
        is void from now on (AADSTS50173 when redeemed) and `tokens_valid_from` moves to now,
        so resources that evaluate continuous access can refuse older access tokens."""
        user = self.user(name_or_oid)
        user.revocations += 1
        user.tokens_valid_from = self.clock()
        return user

    def set_password(self, name_or_oid: str, password: str) -> User:
        """A password change or reset: refresh tokens issued before it stop working, as in
        Entra (setting `User.password` directly voids them too)."""
        if not isinstance(password, str) or not password:
            raise ValueError("a password must not be empty")
        user = self.user(name_or_oid)
        user.password = password
        user.tokens_valid_from = self.clock()
        return user

    def user(self, name_or_oid: str) -> User:
        """The user with this full username or oid, or this name before the `@` when exactly
        one user has it; `KeyError` otherwise (naming the candidates when it is ambiguous)."""
        found = self._users_matching(name_or_oid)
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(sorted(u.username for u in found))
            raise KeyError(f"{name_or_oid!r} is ambiguous ({names}): use the full username")
        raise KeyError(f"no user registered as {name_or_oid!r}")

    def find_user(self, name_or_oid: str) -> User | None:
        """Like `user()`, but None for an unknown or ambiguous name."""
        found = self._users_matching(name_or_oid)
        return found[0] if len(found) == 1 else None

    def _users_matching(self, name_or_oid: str) -> list[User]:
        key = name_or_oid.lower()
        exact = [u for u in self.users if key in (u.username.lower(), u.oid)]
        if exact or "@" in key:
            return exact[:1]
        return [u for u in self.users if u.username.split("@", 1)[0].lower() == key]

    def _short_name(self, user: User) -> str:
        """The name before the `@` when it is unambiguous, else the full username."""
        local = user.username.split("@", 1)[0]
        return local if self.find_user(local) is user else user.username

    def summary(self, *, include_secrets: bool) -> dict[str, Any]:
        """JSON-ready description, for the CLI's `--write-env` and for test set-up."""

        def secret(value: str) -> str:
            return value if include_secrets else "**********"

        return {
            "tenants": [{"id": t.id, "name": t.name} for t in self.tenants],
            "apps": {
                a.name: {
                    "client_id": a.client_id,
                    "tenant_id": a.tenant_id,
                    "public_client": a.public_client,
                    "app_id_uri": a.app_id_uri,
                    "scopes": sorted(a.scopes),
                    "app_roles": sorted(a.app_roles),
                    "secrets": [secret(s) for s in a.secrets],
                    "certificate_thumbprints": [c.thumbprint_hex for c in a.certificates],
                    "api_permissions": {k: sorted(v) for k, v in a.api_permissions.items()},
                    "access_token_version": a.access_token_version,
                }
                for a in self.apps
            },
            "users": {
                self._short_name(u): {
                    "username": u.username,
                    "password": secret(u.password),
                    "oid": u.oid,
                    "tenant_id": u.tenant_id,
                    "display_name": u.display_name,
                }
                for u in self.users
            },
        }


def _exposed(api: App, names: Iterable[str], kind: str) -> frozenset[str]:
    """`names` as a set, each a delegated scope (kind "scope") or app role ("role") of `api`."""
    wanted = frozenset([names] if isinstance(names, str) else names)
    offered = api.scopes if kind == "scope" else api.app_roles
    if not wanted:
        raise ValueError(f"no {kind} named for {api.name!r}")
    unknown = wanted - offered
    if unknown:
        raise ValueError(
            f"{api.name!r} exposes no {kind} {', '.join(sorted(unknown))} "
            f"(it has: {', '.join(sorted(offered)) or 'none'})"
        )
    return wanted
