"""World files: tenants, app registrations and users for the dev authority, in TOML or JSON.

One file serves `grpc-obo authority --world FILE`, the pytest plugin (`grpc_obo_world` ini
option) and `DevAuthority(world=FILE)`. What a file leaves out is filled in: a random GUID for
a tenant, client id or oid, one new secret for a confidential app, a new password for a user.
Anything wrong raises `WorldFileError` naming the file and the field (`apps.orders.scopes`),
never quoting a secret or password.

```toml
[tenants.contoso]                       # the first tenant is the home tenant
id = "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"

[apps.web]                              # a public client that signs users in
public_client = true
api_permissions = { orders = ["Orders.Read"] }   # delegated, admin-consented

[apps.orders]                           # an API that calls another On-Behalf-Of
scopes = ["Orders.Read"]
certificate = true
api_permissions = { stock = ["Stock.Read"] }

[apps.stock]
scopes = ["Stock.Read"]

[[apps.orders.federated_credentials]]   # workload identity: no secret needed
issuer = "{authority_host}/workload/dev"  # the dev workload issuer, or any https issuer
subject = "system:serviceaccount:shop:orders"
# audiences = ["api://AzureADTokenExchange"]  (the default)

[[users]]
username = "alice@contoso.example"
```
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grpc_obo.devauthority._registrations import (
    TOKEN_EXCHANGE_AUDIENCE,
    App,
    ClientCertificate,
    Tenant,
    User,
    check_redirect_uri,
    new_guid,
    new_secret,
)
from grpc_obo.devauthority._world import World

__all__ = ["WorldFileError", "load_world", "world_from_dict"]

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

_TOP = ("tenants", "apps", "users")
_TENANT_FIELDS = ("id",)
_APP_FIELDS = (
    "client_id",
    "tenant",
    "public_client",
    "secrets",
    "certificate",
    "certificate_files",
    "app_id_uri",
    "scopes",
    "app_roles",
    "api_permissions",
    "pre_authorized",
    "app_role_assignments",
    "access_token_version",
    "multi_tenant",
    "federated_credentials",
    "redirect_uris",
)
_FIC_FIELDS = ("name", "issuer", "subject", "audiences")
_USER_FIELDS = ("username", "tenant", "password", "oid", "display_name", "app_roles")


class WorldFileError(ValueError):
    """A world file that cannot be used; `field` is the dotted path of what is wrong."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


MAX_WORLD_FILE_BYTES = 1024 * 1024
MAX_CERTIFICATE_FILE_BYTES = 64 * 1024


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes.

    Opened non-blocking and checked on the open descriptor, so a FIFO, a device or a directory
    (or a file swapped for one meanwhile) is refused instead of hanging or reading forever.
    Raises `OSError` (with a `strerror` fit to show) otherwise.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(0, f"larger than {limit} bytes")
    return data


def load_world(path: str | os.PathLike[str]) -> World:
    """Read a world file: `.toml`, or `.json`. Relative certificate paths are relative to it."""
    file = Path(path)
    source = str(path)
    try:
        raw = read_regular_file(file, MAX_WORLD_FILE_BYTES)
    except OSError as exc:
        raise WorldFileError(source, "", f"cannot be read ({exc.strerror or 'error'})") from None
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorldFileError(source, "", "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise WorldFileError(source, "", f"is not valid JSON (line {exc.lineno})") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorldFileError(source, "", f"is not valid TOML ({exc})") from None
    except RecursionError:
        raise WorldFileError(source, "", "is nested too deeply") from None
    return world_from_dict(data, source=source, base_dir=file.parent)


def world_from_dict(
    data: object, *, source: str = "world", base_dir: str | os.PathLike[str] | None = None
) -> World:
    """Build a `World` from the parsed form of a world file (see the module docstring)."""
    return _Loader(source, Path(base_dir) if base_dir is not None else Path.cwd()).load(data)


class _Loader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, field: str, problem: str) -> WorldFileError:
        return WorldFileError(self.source, field, problem)

    # -- shapes ---------------------------------------------------------------------------

    def table(self, value: object, field: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(field, "must be a table (an object)")
        return value

    def known(self, value: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> None:
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = f"{field}.{key}" if field else str(key)
                raise self.error(where, f"unknown field{hint}; known: {', '.join(allowed)}")

    def string(self, value: object, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, "must be a non-empty string")
        return value

    def strings(self, value: object, field: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(field, "must be a list of strings")
        for index, item in enumerate(value):
            self.string(item, f"{field}[{index}]")
        return list(value)

    def boolean(self, value: object, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(field, "must be true or false")
        return value

    def guid(self, value: object, field: str) -> str:
        text = self.string(value, field).lower()
        if not _GUID.match(text):
            raise self.error(field, "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        return text

    def name(self, value: object, field: str) -> str:
        text = self.string(value, field)
        if not _NAME.match(text) or _GUID.match(text.lower()):
            raise self.error(field, "a name is a letter then letters, digits, '_', '.', '-'")
        return text

    # -- the world --------------------------------------------------------------------------

    def load(self, data: object) -> World:
        top = self.table(data, "")
        self.known(top, "", _TOP)
        tenants = self.tenants(top.get("tenants", {}))
        world = World(tenants=tenants, apps=[], users=[])
        apps = self.table(top.get("apps", {}), "apps")
        specs: list[tuple[App, Mapping[str, Any], str]] = []
        for name, spec in apps.items():
            field = f"apps.{name}"
            app = self.app(world, self.name(name, field), self.table(spec, field), field)
            if world.find_app(app.client_id) is not None:
                raise self.error(f"{field}.client_id", "is already another app's client id")
            taken = world.identifier_owner(app)
            if taken is not None:
                raise self.error(
                    f"{field}.app_id_uri",
                    f"names the app {taken.name!r} already (App ID URIs "
                    "are unique, and api://<client id> belongs to that client id's app)",
                )
            world.apps.append(app)
            specs.append((app, spec, field))
        # Permissions name other apps, which may come later in the file: a second pass.
        for app, spec, field in specs:
            self.permissions(world, app, spec, field)
        users = top.get("users", [])
        if not isinstance(users, list):
            raise self.error("users", "must be a list of tables ([[users]] in TOML)")
        for index, spec in enumerate(users):
            field = f"users[{index}]"
            world.users.append(self.user(world, self.table(spec, field), field))
        return world

    def tenants(self, value: object) -> list[Tenant]:
        table = self.table(value, "tenants")
        if not table:
            return [Tenant(new_guid(), "home")]
        tenants: list[Tenant] = []
        for name, spec in table.items():
            field = f"tenants.{name}"
            self.name(name, field)
            spec = self.table(spec, field)
            self.known(spec, field, _TENANT_FIELDS)
            tenant_id = self.guid(spec["id"], f"{field}.id") if "id" in spec else new_guid()
            if any(t.id == tenant_id for t in tenants):
                raise self.error(f"{field}.id", "is already another tenant's id")
            tenants.append(Tenant(tenant_id, name))
        return tenants

    def tenant(self, world: World, value: object, field: str) -> Tenant:
        found = world.find_tenant(self.string(value, field))
        if found is None:
            names = ", ".join(t.name for t in world.tenants)
            raise self.error(field, f"names no tenant of this world (tenants: {names})")
        return found

    def app(self, world: World, name: str, spec: Mapping[str, Any], field: str) -> App:
        self.known(spec, field, _APP_FIELDS)
        if world.find_app(name) is not None:
            raise self.error(field, "an app of that name exists already")
        public = self.boolean(spec.get("public_client", False), f"{field}.public_client")
        if "secrets" in spec:
            secrets = self.strings(spec["secrets"], f"{field}.secrets")
        else:
            secrets = [] if public else [new_secret()]
        certificates: list[ClientCertificate] = []
        if self.boolean(spec.get("certificate", False), f"{field}.certificate"):
            certificates.append(ClientCertificate.generate(name))
        for index, path in enumerate(
            self.strings(spec.get("certificate_files", []), f"{field}.certificate_files")
        ):
            certificates.append(self.certificate(path, f"{field}.certificate_files[{index}]"))
        if public and (secrets or certificates):
            raise self.error(field, "a public client has no secrets or certificates")
        version = spec.get("access_token_version", 2)
        if version not in (1, 2) or isinstance(version, bool):
            raise self.error(f"{field}.access_token_version", "must be 1 or 2")
        tenant = (
            self.tenant(world, spec["tenant"], f"{field}.tenant")
            if "tenant" in spec
            else world.home_tenant
        )
        app = App(
            name=name,
            client_id=(
                self.guid(spec["client_id"], f"{field}.client_id")
                if "client_id" in spec
                else new_guid()
            ),
            tenant_id=tenant.id,
            public_client=public,
            secrets=secrets,
            certificates=certificates,
            app_id_uri=(
                self.string(spec["app_id_uri"], f"{field}.app_id_uri")
                if "app_id_uri" in spec
                else None
            ),
            scopes=frozenset(self.strings(spec.get("scopes", []), f"{field}.scopes")),
            app_roles=frozenset(self.strings(spec.get("app_roles", []), f"{field}.app_roles")),
            access_token_version=version,
            multi_tenant=self.boolean(spec.get("multi_tenant", True), f"{field}.multi_tenant"),
            redirect_uris=self.redirect_uris(spec.get("redirect_uris", []), field),
        )
        self.federated(app, spec.get("federated_credentials", []), f"{field}.federated_credentials")
        return app

    def federated(self, app: App, value: object, field: str) -> None:
        if not isinstance(value, list):
            raise self.error(field, "must be a list of tables ([[...federated_credentials]])")
        holder = World(tenants=[], apps=[app], users=[])
        for index, item in enumerate(value):
            where = f"{field}[{index}]"
            spec = self.table(item, where)
            self.known(spec, where, _FIC_FIELDS)
            for required in ("issuer", "subject"):
                if required not in spec:
                    raise self.error(f"{where}.{required}", "is missing")
            try:
                holder.add_federated_credential(
                    app.client_id,
                    issuer=self.string(spec["issuer"], f"{where}.issuer"),
                    subject=self.string(spec["subject"], f"{where}.subject"),
                    audiences=self.strings(
                        spec.get("audiences", [TOKEN_EXCHANGE_AUDIENCE]), f"{where}.audiences"
                    ),
                    name=self.name(spec["name"], f"{where}.name") if "name" in spec else None,
                )
            except ValueError as exc:
                raise self.error(where, str(exc)) from None

    def redirect_uris(self, value: object, field: str) -> tuple[str, ...]:
        uris = self.strings(value, f"{field}.redirect_uris")
        for index, uri in enumerate(uris):
            try:
                check_redirect_uri(uri)
            except ValueError as exc:
                raise self.error(f"{field}.redirect_uris[{index}]", str(exc)) from None
        return tuple(uris)

    def certificate(self, path: str, field: str) -> ClientCertificate:
        file = Path(path) if os.path.isabs(path) else self.base_dir / path
        try:
            data = read_regular_file(file, MAX_CERTIFICATE_FILE_BYTES)
        except OSError as exc:
            why = f" ({exc.strerror})" if exc.strerror else ""
            raise self.error(field, f"cannot read {str(file)!r}{why}") from None
        cert = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", data, re.S)
        key = re.search(rb"-----BEGIN ((?:RSA )?PRIVATE KEY)-----.*?-----END \1-----", data, re.S)
        if cert is None:
            raise self.error(field, f"{str(file)!r} holds no PEM certificate")
        certificate = ClientCertificate(
            certificate_pem=cert.group(0) + b"\n",
            private_key_pem=key.group(0) + b"\n" if key else None,
        )
        try:
            _ = certificate.thumbprint_sha1
        except ValueError:
            raise self.error(field, f"{str(file)!r} holds no readable certificate") from None
        return certificate

    def permissions(self, world: World, app: App, spec: Mapping[str, Any], field: str) -> None:
        for key, kind, into, forward in (
            ("api_permissions", "scope", app.api_permissions, True),
            ("app_role_assignments", "role", app.app_role_assignments, True),
            ("pre_authorized", "scope", app.pre_authorized, False),
        ):
            table = self.table(spec.get(key, {}), f"{field}.{key}")
            for other_name, names in table.items():
                where = f"{field}.{key}.{other_name}"
                other = world.find_app(str(other_name))
                if other is None:
                    raise self.error(where, "names no app of this world")
                wanted = frozenset(self.strings(names, where))
                # api_permissions / app_role_assignments name scopes of the *other* app;
                # pre_authorized names scopes of this one, for the other (client) app.
                exposing = other if forward else app
                offered = exposing.scopes if kind == "scope" else exposing.app_roles
                unknown = sorted(wanted - offered)
                if not wanted or unknown:
                    missing = ", ".join(unknown) or "(none given)"
                    raise self.error(
                        where,
                        f"{exposing.name!r} exposes no {kind} {missing} "
                        f"(it has: {', '.join(sorted(offered)) or 'none'})",
                    )
                into[other.client_id] = wanted

    def user(self, world: World, spec: Mapping[str, Any], field: str) -> User:
        self.known(spec, field, _USER_FIELDS)
        if "username" not in spec:
            raise self.error(f"{field}.username", "is missing (users sign in as name@domain)")
        username = self.string(spec["username"], f"{field}.username")
        if "@" not in username or username.startswith("@") or username.endswith("@"):
            raise self.error(f"{field}.username", "must look like name@domain")
        if any(u.username.lower() == username.lower() for u in world.users):
            raise self.error(f"{field}.username", "is another user's username")
        if "tenant" in spec:
            tenant = self.tenant(world, spec["tenant"], f"{field}.tenant")
        else:
            tenant = world.tenant_for_username(username)
        oid = self.guid(spec["oid"], f"{field}.oid") if "oid" in spec else new_guid()
        if world.find_user(oid) is not None:
            raise self.error(f"{field}.oid", "is another user's oid")
        user = User(
            username=username,
            oid=oid,
            tenant_id=tenant.id,
            display_name=(
                self.string(spec["display_name"], f"{field}.display_name")
                if "display_name" in spec
                else username.split("@", 1)[0].capitalize()
            ),
        )
        if "password" in spec:
            user.password = self.string(spec["password"], f"{field}.password")
        roles = self.table(spec.get("app_roles", {}), f"{field}.app_roles")
        for api_name, names in roles.items():
            where = f"{field}.app_roles.{api_name}"
            api = world.find_app(str(api_name))
            if api is None:
                raise self.error(where, "names no app of this world")
            wanted = frozenset(self.strings(names, where))
            unknown = sorted(wanted - api.app_roles)
            if unknown:
                raise self.error(where, f"{api.name!r} defines no app role {', '.join(unknown)}")
            user.app_roles[api.client_id] = wanted
        return user
