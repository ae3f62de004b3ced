"""The registrations the example chain needs, on top of the dev authority's demo world.

    client app ──▶ Workspace ("original") ──▶ DocumentStore ("downstream") ──▶ KeyVault ("vault")

As in Entra ID, each API is an app registration exposing delegated scopes, and each middle tier
holds an admin-consented permission on the next one: the Workspace has Data.Read and Data.Write
on the store, the store has Keys.Read on the vault. dave must pass MFA before the vault releases
his key (a conditional-access policy on the vault), so his claims challenge arises two hops away
from the client app that has to answer it.
"""

from __future__ import annotations

from grpc_obo.devauthority import CONTOSO, DevAuthority, User, World, default_world

VAULT_CLIENT_ID = "c7e1a5b0-3f2d-4a8c-9b6e-0c0ffee0ca17"
DAVE_OID = "da7e0000-0000-4000-8000-0000000da7e0"
# What Entra sends when a conditional-access policy (a made-up policy id) asks for MFA.
MFA_CLAIMS = (
    '{"access_token":{"capolids":{"essential":true,'
    '"values":["c0ffee00-0000-4000-8000-00000000ca01"]}}}'
)

STORE_SCOPES = ("Data.Read", "Data.Write")
VAULT_SCOPES = ("Keys.Read",)

# Workload identity: the middle tiers run as these Kubernetes service accounts of the dev
# cluster "demo"; their app registrations trust exactly these subjects (federated credentials),
# so the two middle tiers hold no secret and no private key.
WORKLOAD_CLUSTER = "demo"
WORKLOAD_SUBJECTS = {
    "original": "system:serviceaccount:demo:workspace",
    "downstream": "system:serviceaccount:demo:store",
}
UNFEDERATED_SUBJECT = "system:serviceaccount:demo:intruder"
"""A pod of the same cluster whose service account no app registration trusts."""


def example_world() -> World:
    """The demo world plus the vault, the consents the chain needs, and dave."""
    world = default_world()
    # The vault is the last hop: an API only, with no credential of its own.
    world.add_app("vault", client_id=VAULT_CLIENT_ID, scopes=VAULT_SCOPES, secret=False)
    world.grant_consent("original", "downstream", STORE_SCOPES)
    world.grant_consent("downstream", "vault", VAULT_SCOPES)
    for app, subject in WORKLOAD_SUBJECTS.items():
        world.add_federated_credential(
            app,
            issuer=f"{{authority_host}}/workload/{WORKLOAD_CLUSTER}",
            subject=subject,
            name="demo-cluster",
        )
    world.users.append(
        User(
            username="dave@contoso.example",
            oid=DAVE_OID,
            tenant_id=CONTOSO,
            display_name="Dave Example",
        )
    )
    return world


def apply_policies(authority: DevAuthority) -> None:
    """Conditional access: dave's tokens for the vault need MFA (a sign-in answering the
    challenge's claims counts as MFA, and the exchanged tokens keep it hop after hop)."""
    authority.faults.require_claims("dave", claims=MFA_CLAIMS, resource_client_id=VAULT_CLIENT_ID)
