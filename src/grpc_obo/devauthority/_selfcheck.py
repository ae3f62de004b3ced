"""A self-check of the dev authority with unmodified MSAL: what `grpc-obo authority --check` runs
before serving (on the demo world's apps and users).

It signs alice in (ROPC), exchanges her token On-Behalf-Of the Original API for the Downstream
API (by secret and by certificate), gets an app-only token by client credentials, and verifies
every token's signature against the JWKS fetched over HTTPS. It reports claims, never tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
import msal

from grpc_obo.devauthority._authority import DevAuthority


@dataclass(frozen=True)
class CheckStep:
    name: str
    ok: bool
    detail: str


def _claims(authority: DevAuthority, token: str, audience: str) -> dict[str, Any]:
    session = authority.msal_http_client()
    try:
        jwks = session.get(authority.jwks_url, timeout=10).json()
    finally:
        session.close()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=authority.issuer(2),  # alice, the apps and the daemon all live in the home tenant
    )
    return claims


def _describe(claims: dict[str, Any]) -> str:
    shown = {k: claims[k] for k in ("oid", "tid", "azp", "scp", "roles", "idtyp") if k in claims}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def run_self_check(authority: DevAuthority) -> list[CheckStep]:
    """Run the flows synchronously (MSAL is sync); the authority must serve from another loop."""
    world = authority.world
    client, original = world.app("client"), world.app("original")
    downstream, daemon = world.app("downstream"), world.app("daemon")
    alice = world.user("alice")
    steps: list[CheckStep] = []
    http = authority.msal_http_client()
    common: dict[str, Any] = {
        "authority": authority.authority_url,
        "instance_discovery": False,
        "http_client": http,
    }
    try:
        public = msal.PublicClientApplication(client.client_id, **common)
        result = public.acquire_token_by_username_password(
            alice.username, alice.password, scopes=[f"{original.app_id_uri}/access_as_user"]
        )
        if "access_token" not in result:
            return [CheckStep("ROPC sign-in (alice)", False, str(result.get("error")))]
        user_token = result["access_token"]
        claims = _claims(authority, user_token, original.client_id)
        steps.append(CheckStep("ROPC sign-in (alice) -> Original API", True, _describe(claims)))

        credentials: list[tuple[str, Any]] = [("secret", original.secrets[0])]
        if original.certificates and original.certificates[0].private_key_pem:
            cert = original.certificates[0]
            credentials.append(
                (
                    "certificate",
                    {
                        "private_key": cert.private_key_pem.decode(),  # type: ignore[union-attr]
                        "public_certificate": cert.certificate_pem.decode(),
                    },
                )
            )
        for label, credential in credentials:
            confidential = msal.ConfidentialClientApplication(
                original.client_id, client_credential=credential, **common
            )
            obo = confidential.acquire_token_on_behalf_of(
                user_token, scopes=[f"{downstream.app_id_uri}/Data.Read"]
            )
            ok = "access_token" in obo
            detail = (
                _describe(_claims(authority, obo["access_token"], downstream.client_id))
                if ok
                else str(obo.get("error"))
            )
            steps.append(CheckStep(f"On-Behalf-Of by {label} -> Downstream API", ok, detail))

        app = msal.ConfidentialClientApplication(
            daemon.client_id, client_credential=daemon.secrets[0], **common
        )
        app_only = app.acquire_token_for_client(scopes=[f"{downstream.app_id_uri}/.default"])
        ok = "access_token" in app_only
        detail = (
            _describe(_claims(authority, app_only["access_token"], downstream.client_id))
            if ok
            else str(app_only.get("error"))
        )
        steps.append(CheckStep("client credentials (daemon) -> Downstream API", ok, detail))
    finally:
        http.close()
    return steps
