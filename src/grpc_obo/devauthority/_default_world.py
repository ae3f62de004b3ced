"""The demo world the examples, `make demo` and the test fixtures use (`default_world()`)."""

from __future__ import annotations

from grpc_obo.devauthority._registrations import App, ClientCertificate, Tenant, User, new_secret
from grpc_obo.devauthority._world import World

# Fixed ids for the demo world make logs and traces readable across runs; secrets, passwords
# and keys are new every time an authority starts.
CONTOSO = "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
FABRIKAM = "9b2d4e6f-8a11-4c3b-b2a0-0c0ffee00002"


def default_world(*, with_certificates: bool = True) -> World:
    """The demo world: a public client, three APIs in a chain, a daemon, and users.

    - `client` (public): signs users in (redirect URI `http://localhost`, any port); may call
      `original` (`access_as_user`).
    - `original` (confidential, secret + certificate): exposes `access_as_user`; holds the
      consented delegated permission `Data.Read` on `downstream` for On-Behalf-Of.
    - `downstream` (confidential): exposes `Data.Read` and `Data.Write`, defines app role
      `Data.Read.All`; holds the consented delegated permission `Prices.Read` on `pricing`, so
      it can call on as the user (client -> original -> downstream -> pricing).
    - `pricing` (confidential): exposes `Prices.Read`, the third hop.
    - `daemon` (confidential): app-only caller with the `Data.Read.All` role on `downstream`.
    - `alice` and `bob` in Contoso, `carol` in the second tenant Fabrikam.
    """
    contoso = Tenant(CONTOSO, "contoso")
    fabrikam = Tenant(FABRIKAM, "fabrikam")

    pricing = App(
        name="pricing",
        client_id="c4f7e2a9-0b3d-4e6f-8a21-0c0ffee0fee5",
        tenant_id=CONTOSO,
        secrets=[new_secret()],
        scopes=frozenset({"Prices.Read"}),
    )
    downstream = App(
        name="downstream",
        client_id="5d0e9c57-4c1f-4a36-8f6e-0c0ffee0d0d0",
        tenant_id=CONTOSO,
        secrets=[new_secret()],
        scopes=frozenset({"Data.Read", "Data.Write"}),
        app_roles=frozenset({"Data.Read.All"}),
        api_permissions={pricing.client_id: frozenset({"Prices.Read"})},
    )
    original = App(
        name="original",
        client_id="3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1",
        tenant_id=CONTOSO,
        secrets=[new_secret()],
        certificates=[ClientCertificate.generate("original")] if with_certificates else [],
        scopes=frozenset({"access_as_user"}),
        api_permissions={downstream.client_id: frozenset({"Data.Read"})},
    )
    client = App(
        name="client",
        client_id="b1e0f1c8-2a3d-4e5f-9a8b-0c0ffee0c1c1",
        tenant_id=CONTOSO,
        public_client=True,
        api_permissions={original.client_id: frozenset({"access_as_user"})},
        redirect_uris=("http://localhost",),  # a native app: any loopback port
    )
    daemon = App(
        name="daemon",
        client_id="e4a7b2d9-6c5f-4d3e-8b1a-0c0ffee0dae0",
        tenant_id=CONTOSO,
        secrets=[new_secret()],
        certificates=[ClientCertificate.generate("daemon")] if with_certificates else [],
        app_role_assignments={downstream.client_id: frozenset({"Data.Read.All"})},
    )
    original.pre_authorized[client.client_id] = frozenset({"access_as_user"})

    users = [
        User(
            username="alice@contoso.example",
            oid="a11ce000-0000-4000-8000-00000000a11c",
            tenant_id=CONTOSO,
            display_name="Alice Example",
        ),
        User(
            username="bob@contoso.example",
            oid="b0b00000-0000-4000-8000-000000000b0b",
            tenant_id=CONTOSO,
            display_name="Bob Example",
        ),
        User(
            username="carol@fabrikam.example",
            oid="ca501000-0000-4000-8000-0000000ca501",
            tenant_id=FABRIKAM,
            display_name="Carol Example",
        ),
    ]
    return World(
        tenants=[contoso, fabrikam],
        apps=[client, original, downstream, daemon, pricing],
        users=users,
    )
