"""Worlds of your own: a TOML or JSON file of tenants, apps and users, defaults for what it leaves
out, errors that name the field; `World.add_user`, unambiguous user look-up across tenants, and
an iterable request log. The README's three-API example file (docs/world.example.toml) runs a
real chain: MSAL sign-in, three grpc.aio APIs, two On-Behalf-Of hops.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import msal
import pytest

import grpc_obo
from grpc_obo.devauthority import (
    DevAuthority,
    World,
    WorldFileError,
    default_world,
    load_world,
    world_from_dict,
)
from tests.devauthority.conftest import TIMEOUT, Http, ropc_form
from tests.devauthority.echo_chain import Hop, call, echo_chain

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "world.example.toml"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


# -- the example file --------------------------------------------------------------------------


def test_the_example_file_loads_and_defaults_fill_the_gaps() -> None:
    world = load_world(EXAMPLE)
    assert [t.name for t in world.tenants] == ["contoso", "fabrikam"]
    assert world.home_tenant.id == "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
    assert GUID.match(world.tenants[1].id)  # a random tenant id
    web, orders, inventory = world.app("web"), world.app("orders"), world.app("inventory")
    warehouse, auditor = world.app("warehouse"), world.app("auditor")
    assert web.public_client and web.secrets == [] and web.certificates == []
    for app in (orders, inventory, warehouse, auditor):  # confidential: one generated secret
        assert len(app.secrets) == 1 and len(app.secrets[0]) == 40
        assert GUID.match(app.client_id)
    assert len(orders.certificates) == 1 and orders.certificates[0].private_key_pem
    assert orders.app_id_uri == f"api://{orders.client_id}"
    assert web.api_permissions == {orders.client_id: {"Orders.Read"}}
    assert orders.api_permissions == {inventory.client_id: {"Stock.Read"}}
    assert inventory.api_permissions == {warehouse.client_id: {"Bins.Read"}}
    assert auditor.app_role_assignments == {warehouse.client_id: {"Bins.Audit"}}
    alice, bob, carol = (world.user(n) for n in ("alice", "bob", "carol"))
    assert alice.tenant_id == bob.tenant_id == world.home_tenant.id
    assert carol.tenant_id == world.find_tenant("fabrikam").id  # type: ignore[union-attr]
    assert GUID.match(alice.oid) and alice.password and alice.password != bob.password
    assert carol.password == "carol-dev-password"
    assert bob.app_roles == {orders.client_id: {"Orders.Admin"}}
    assert alice.display_name == "Alice"
    # Loading again makes new secrets and passwords: nothing generated is written anywhere.
    again = load_world(EXAMPLE)
    assert again.app("orders").secrets != orders.secrets
    assert again.home_tenant.id == world.home_tenant.id


def test_json_is_the_same_world_as_toml(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    data = example()
    data["apps"]["orders"]["client_id"] = "0c0ffee0-0000-4000-8000-000000000001"
    path.write_text(json.dumps(data), encoding="utf-8")
    world = load_world(path)
    assert world.app("orders").client_id == "0c0ffee0-0000-4000-8000-000000000001"
    assert sorted(a.name for a in world.apps) == sorted(example()["apps"])
    assert world.user("carol").password == "carol-dev-password"


def test_an_empty_world_has_one_home_tenant() -> None:
    world = world_from_dict({})
    assert [t.name for t in world.tenants] == ["home"] and world.apps == [] and world.users == []


def test_certificate_files_are_registered(tmp_path: Path) -> None:
    cert = default_world().app("original").certificates[0]
    assert cert.private_key_pem is not None
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "api.pem").write_bytes(cert.private_key_pem + cert.certificate_pem)
    (tmp_path / "public.pem").write_bytes(cert.certificate_pem)
    path = tmp_path / "world.toml"
    path.write_text(
        '[apps.api]\nscopes = ["Read"]\ncertificate_files = ["certs/api.pem", "public.pem"]\n'
        "secrets = []\n",
        encoding="utf-8",
    )
    api = load_world(path).app("api")
    assert api.secrets == []
    assert [c.thumbprint_hex for c in api.certificates] == [cert.thumbprint_hex] * 2
    assert api.certificates[0].private_key_pem == cert.private_key_pem
    assert api.certificates[1].private_key_pem is None


# -- errors name the field --------------------------------------------------------------------


def _broken(change: dict[str, Any]) -> dict[str, Any]:
    data = example()
    for dotted, value in change.items():
        *path, last = dotted.split(".")
        node = data
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"apps.orders.scope": ["X"]}, "apps.orders.scope", "did you mean 'scopes'"),
        ({"apps.orders.scopes": "Orders.Read"}, "apps.orders.scopes", "list of strings"),
        ({"apps.orders.scopes": ["Orders.Read", 3]}, "apps.orders.scopes[1]", "non-empty string"),
        (
            {"apps.web.api_permissions": {"orders": ["Orders.Delete"]}},
            "apps.web.api_permissions.orders",
            "exposes no scope Orders.Delete",
        ),
        (
            {"apps.web.api_permissions": {"shop": ["Read"]}},
            "apps.web.api_permissions.shop",
            "names no app",
        ),
        (
            {"apps.auditor.app_role_assignments": {"warehouse": ["Bins.Write"]}},
            "apps.auditor.app_role_assignments.warehouse",
            "exposes no role Bins.Write",
        ),
        ({"apps.orders.client_id": "not-a-guid"}, "apps.orders.client_id", "must be a GUID"),
        ({"apps.web.secrets": ["s3cret-in-file"]}, "apps.web", "public client"),
        ({"apps.orders.access_token_version": 3}, "apps.orders.access_token_version", "1 or 2"),
        ({"apps.orders.public_client": "yes"}, "apps.orders.public_client", "true or false"),
        ({"apps.orders.tenant": "northwind"}, "apps.orders.tenant", "names no tenant"),
        (
            {"apps.orders.certificate_files": ["missing.pem"]},
            "apps.orders.certificate_files[0]",
            "cannot read",
        ),
        ({"tenants.contoso.id": "contoso"}, "tenants.contoso.id", "must be a GUID"),
        ({"users.0.username": "alice"}, "users[0].username", "name@domain"),
        ({"users.1.username": "alice@contoso.example"}, "users[1].username", "another user's"),
        ({"users.2.tenant": "northwind"}, "users[2].tenant", "names no tenant"),
        (
            {"users.1.app_roles": {"orders": ["Orders.Root"]}},
            "users[1].app_roles.orders",
            "defines no app role Orders.Root",
        ),
        ({"users.0.oid": "123"}, "users[0].oid", "must be a GUID"),
        ({"users.0.pasword": "s3cret-in-file"}, "users[0].pasword", "did you mean 'password'"),
        ({"users.2.username": _DELETE}, "users[2].username", "is missing"),
        ({"user": []}, "user", "did you mean 'users'"),
    ],
)
def test_a_wrong_field_is_named(change: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(WorldFileError) as caught:
        world_from_dict(_broken(change), source="world.toml")
    error = caught.value
    assert error.field == field, str(error)
    assert problem in error.problem, str(error)
    assert str(error).startswith(f"world.toml: {field}: ")
    assert "s3cret-in-file" not in str(error) and "carol-dev-password" not in str(error)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WorldFileError, match=r"missing\.toml: cannot be read"):
        load_world(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[apps.orders\nscopes = 1", encoding="utf-8")
    with pytest.raises(WorldFileError, match=r"bad\.toml: is not valid TOML"):
        load_world(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{", encoding="utf-8")
    with pytest.raises(WorldFileError, match=r"bad\.json: is not valid JSON"):
        load_world(bad_json)
    assert issubclass(WorldFileError, ValueError)


# -- users at run time, and look-ups across tenants --------------------------------------------


def test_add_user_fills_defaults_and_checks() -> None:
    world = default_world()
    dana = world.add_user("dana@fabrikam.example", app_roles={"downstream": ["Data.Read.All"]})
    assert dana.tenant_id == world.find_tenant("fabrikam").id  # type: ignore[union-attr]
    assert GUID.match(dana.oid) and len(dana.password) == 40
    assert dana.app_roles == {world.app("downstream").client_id: {"Data.Read.All"}}
    erin = world.add_user(
        "erin@elsewhere.example", password="pw", oid="E0000000-0000-4000-8000-000000000001"
    )
    assert (erin.tenant_id, erin.password, erin.oid) == (
        world.home_tenant.id,
        "pw",
        "e0000000-0000-4000-8000-000000000001",
    )
    assert world.add_user("frank@x.example", tenant="FABRIKAM").tenant_id == world.tenants[1].id
    for bad in ("dana@fabrikam.example", "DANA@fabrikam.example", "nobody", "a@b@c", "x@"):
        with pytest.raises(ValueError):
            world.add_user(bad)
    with pytest.raises(ValueError):
        world.add_user("gina@contoso.example", oid=dana.oid)
    with pytest.raises(ValueError):
        world.add_user("gina@contoso.example", app_roles={"downstream": ["Nope"]})
    with pytest.raises(KeyError):
        world.add_user("gina@contoso.example", tenant="northwind")


def test_a_full_username_is_unambiguous_across_tenants(authority: DevAuthority, http: Http) -> None:
    world = authority.world
    twin = world.add_user("alice@fabrikam.example")
    try:
        contoso_alice = world.user("alice@contoso.example")
        assert world.user("alice@fabrikam.example") is twin
        assert world.user("ALICE@Fabrikam.example") is twin
        assert world.user(twin.oid) is twin
        with pytest.raises(KeyError, match=r"ambiguous.*alice@contoso\.example, alice@fabrikam"):
            world.user("alice")
        assert world.find_user("alice") is None
        # Each signs in with their full username and gets a token of their own tenant.
        for user in (contoso_alice, twin):
            form = ropc_form(authority, user.username)
            body = http.token(form, tenant=user.tenant_id).json()
            claims = http.verify(
                body["access_token"],
                audience=world.app("original").client_id,
                issuer=authority.issuer(2, user.tenant_id),
            )
            assert (claims["oid"], claims["tid"]) == (user.oid, user.tenant_id)
        summary = world.summary(include_secrets=False)["users"]
        assert {"alice@contoso.example", "alice@fabrikam.example", "bob"} <= set(summary)
    finally:
        world.users.remove(twin)
    assert world.user("alice") is contoso_alice


# -- the request log is iterable --------------------------------------------------------------


def test_the_request_log_is_iterable(authority: DevAuthority, http: Http) -> None:
    assert len(authority.requests) == 0 and list(authority.requests) == []
    http.token(ropc_form(authority, "alice"))
    http.token(ropc_form(authority, "bob"))
    http.get(authority.jwks_url)
    entries = list(authority.requests)
    assert len(authority.requests) == len(entries) == 3
    assert [e.endpoint for e in authority.requests] == ["token", "token", "jwks"]
    assert [e.username for e in authority.requests.matching(grant="password")] == [
        "alice@contoso.example",
        "bob@contoso.example",
    ]
    assert authority.requests.matching(user="bob")[0].status == 200


# -- the docs' example world runs a three-API chain ----------------------------------------------


def test_the_docs_show_the_example_file_itself() -> None:
    # The guide includes the file at build time: what it shows is what this test loads.
    guide = (REPO / "docs" / "guides" / "dev-authority.md").read_text(encoding="utf-8")
    assert "```{literalinclude} ../world.example.toml\n" in guide


def _sign_in(authority: DevAuthority, user: str, scope: str) -> str:
    world = authority.world
    found = world.user(user)
    http = authority.msal_http_client()
    try:
        app = msal.PublicClientApplication(
            world.app("web").client_id,
            authority=authority.authority_for(found.tenant_id),  # the user's own tenant
            instance_discovery=False,
            http_client=http,
            timeout=TIMEOUT,
        )
        result: dict[str, Any] = app.acquire_token_by_username_password(
            found.username, found.password, scopes=[scope]
        )
    finally:
        http.close()
    assert "access_token" in result, result.get("error")
    return str(result["access_token"])


def _hop(
    authority: DevAuthority, name: str, scopes: set[str], calls: tuple[str, str] | None = None
) -> Hop:
    world = authority.world
    app = world.app(name)
    options = grpc_obo.ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(t.id for t in world.tenants),
        audiences=frozenset({app.client_id}),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )
    if calls is None:
        return Hop(name, options, frozenset(scopes))
    client = grpc_obo.ConfidentialClient(
        client_id=app.client_id,
        tenant=app.tenant_id,
        credential=grpc_obo.ClientCredential.secret(app.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )
    next_app, scope = calls
    next_scopes = [f"{world.app(next_app).app_id_uri}/{scope}"]
    return Hop(name, options, frozenset(scopes), client, next_scopes)


@pytest.mark.filterwarnings(
    "ignore:This API has been deprecated for public client flows:DeprecationWarning"
)
async def test_the_readme_world_runs_a_three_api_chain() -> None:
    with DevAuthority(world=EXAMPLE).running_in_thread() as authority:
        world = authority.world
        hops = [
            _hop(authority, "orders", {"Orders.Read"}, ("inventory", "Stock.Read")),
            _hop(authority, "inventory", {"Stock.Read"}, ("warehouse", "Bins.Read")),
            _hop(authority, "warehouse", {"Bins.Read"}),
        ]
        scope = f"{world.app('orders').app_id_uri}/Orders.Read"
        async with echo_chain(hops) as target:
            for user in ("alice", "carol"):  # two tenants: each exchange goes to the user's
                token = await asyncio.to_thread(_sign_in, authority, user, scope)
                trail = await call(target, token)
                found = world.user(user)
                ids = {n: world.app(n).client_id for n in ("web", "orders", "inventory")}
                assert trail.split(" | ") == [
                    f"warehouse {found.tenant_id}/{found.oid} azp={ids['inventory']} scp=Bins.Read",
                    f"inventory {found.tenant_id}/{found.oid} azp={ids['orders']} scp=Stock.Read",
                    f"orders {found.tenant_id}/{found.oid} azp={ids['web']} scp=Orders.Read",
                ]
                await call(target, token)  # cached: no new exchange
                for by in ("orders", "inventory"):
                    assert (
                        authority.requests.count(
                            grant="obo", user=found.oid, client_id=ids[by], ok=True
                        )
                        == 1
                    )


def test_a_world_object_is_served_as_given() -> None:
    world = World(tenants=default_world().tenants, apps=[], users=[])
    assert DevAuthority(world=world).world is world
    assert DevAuthority(world=str(EXAMPLE)).world.app("orders").scopes == {
        "Orders.Read",
        "Orders.Write",
    }
