"""The dev workload-identity issuer: a cluster's service-account issuer (discovery + JWKS over
the authority's HTTPS), projected token files rotated before expiry as the kubelet does (driven
by the test's clock), the pod's environment, and `grpc-obo authority --write-dotenv` giving a
federated app a token file instead of a secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import requests

from grpc_obo.devauthority import App, DevAuthority
from grpc_obo.devauthority._workload import ROTATE_AT, WorkloadIssuers, pod_env

from .conftest import TIMEOUT, downstream_scope, msal_app

ORDERS = "system:serviceaccount:shop:orders"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _session(authority: DevAuthority) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(authority.ca_file)
    return session


def test_the_issuer_serves_discovery_and_jwks_over_https(authority: DevAuthority) -> None:
    issuer = authority.workloads.issuer("dev")
    assert issuer.url == f"{authority.base_url}/workload/dev"
    session = _session(authority)
    discovery = session.get(f"{issuer.url}/.well-known/openid-configuration", timeout=TIMEOUT)
    assert discovery.status_code == 200
    document = discovery.json()
    assert document["issuer"] == issuer.url
    assert document["jwks_uri"] == f"{issuer.url}/openid/v1/jwks"
    keys = session.get(document["jwks_uri"], timeout=TIMEOUT).json()["keys"]
    token = issuer.token("shop", "orders")
    key = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="api://AzureADTokenExchange")
    assert claims["iss"] == issuer.url
    assert claims["sub"] == ORDERS
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "orders"
    assert session.get(f"{authority.base_url}/workload/nope/openid/v1/jwks").status_code == 404


def test_a_projected_token_rotates_at_80_percent_of_its_lifetime(tmp_path: Path) -> None:
    clock = Clock(1_900_000_000.0)
    issuers = WorkloadIssuers(base_url=lambda: "https://127.0.0.1:8443", clock=clock)
    path = tmp_path / "sa" / "token"
    projected = issuers.project(path, ORDERS, lifetime=1000)
    first = path.read_text()
    assert jwt.decode(first, options={"verify_signature": False})["exp"] == 1_900_001_000
    assert path.stat().st_mode & 0o077 == 0
    clock.now += ROTATE_AT * 1000 - 1
    assert issuers.rotate_due() == 0
    assert path.read_text() == first
    clock.now += 1
    assert issuers.rotate_due() == 1
    second = path.read_text()
    assert second != first
    assert jwt.decode(second, options={"verify_signature": False})["iat"] == clock.now
    assert projected.rotations == 1 and projected.expires_at == clock.now + 1000


def test_the_pod_environment(tmp_path: Path, authority: DevAuthority, middle_tier: App) -> None:
    token = authority.workloads.project(tmp_path / "token", ORDERS)
    env = pod_env(middle_tier, token, authority_host=authority.base_url)
    assert env == {
        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "token"),
        "AZURE_CLIENT_ID": middle_tier.client_id,
        "AZURE_TENANT_ID": middle_tier.tenant_id,
        "AZURE_AUTHORITY_HOST": authority.base_url,
    }


def test_msal_authenticates_with_the_token_file_across_a_rotation(tmp_path: Path) -> None:
    clock = Clock(__import__("time").time())
    authority = DevAuthority(clock=clock)
    with authority.running_in_thread():
        app = authority.world.add_app(
            "orders", secret=False, app_role_assignments={"downstream": ["Data.Read.All"]}
        )
        issuer = authority.workloads.issuer("dev")
        authority.world.add_federated_credential(
            "orders", issuer=issuer.credential_issuer, subject=ORDERS
        )
        path = tmp_path / "token"
        authority.workloads.project(path, ORDERS, lifetime=600)
        client = msal_app(authority, app, lambda: path.read_text())
        scope = [downstream_scope(authority, ".default")]
        seen = []
        for _ in range(2):
            result = client.acquire_token_for_client(scope)
            assert "access_token" in result, result.get("error_description")
            seen.append(path.read_text())
            client.token_cache = type(client.token_cache)()  # ask the authority again
            clock.now += 500
            assert authority.workloads.rotate_due() == 1
        assert seen[0] != seen[1]
        # The old token, past its exp, is refused as Entra does.
        stale = msal_app(authority, app, seen[0]).acquire_token_for_client(scope)
        assert stale["error_codes"] == [700024]


def test_a_service_account_that_is_not_federated_is_refused(
    tmp_path: Path, authority: DevAuthority, middle_tier: App
) -> None:
    issuer = authority.workloads.issuer("dev")
    authority.world.add_federated_credential(
        middle_tier.name, issuer=issuer.credential_issuer, subject=ORDERS
    )
    path = tmp_path / "token"
    authority.workloads.project(path, "system:serviceaccount:shop:intruder")
    result = msal_app(authority, middle_tier, lambda: path.read_text()).acquire_token_for_client(
        [downstream_scope(authority, ".default")]
    )
    assert result["error_codes"] == [700213]
    assert "system:serviceaccount:shop:intruder" in result["error_description"]


def test_write_dotenv_gives_a_federated_app_a_token_file_and_no_secret(tmp_path: Path) -> None:
    world = tmp_path / "world.toml"
    world.write_text(
        """
[apps.web]
public_client = true
api_permissions = { orders = ["Orders.Read"] }

[apps.orders]
scopes = ["Orders.Read"]
secrets = []

[[apps.orders.federated_credentials]]
issuer = "{authority_host}/workload/shop-cluster"
subject = "system:serviceaccount:shop:orders"

[apps.legacy]
scopes = ["Legacy.Read"]
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "grpc_obo._cli", "authority", "--world", str(world),
         "--write-dotenv", "env", "--state-dir", "state", "--serve-seconds", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    orders = dict(
        line.split("=", 1)
        for line in (tmp_path / "env" / "orders.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    token_file = Path(orders["AZURE_FEDERATED_TOKEN_FILE"])
    assert token_file == tmp_path / "env" / "orders.token"
    assert shown["workload_tokens"] == {"orders": str(token_file)}
    claims = jwt.decode(token_file.read_text(), options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:shop:orders"
    assert claims["iss"].endswith("/workload/shop-cluster")
    assert orders["AZURE_CLIENT_ID"] == shown["apps"]["orders"]["client_id"]
    assert orders["AZURE_TENANT_ID"] == shown["tenant_id"]
    assert orders["AZURE_AUTHORITY_HOST"] == shown["authority_host"]
    assert "AZURE_CLIENT_SECRET" not in orders and "AZURE_CLIENT_CERTIFICATE_PATH" not in orders
    legacy = (tmp_path / "env" / "legacy.env").read_text()
    assert "AZURE_CLIENT_SECRET=" in legacy and "AZURE_FEDERATED_TOKEN_FILE" not in legacy


@pytest.mark.parametrize("subject", ["system:serviceaccount:shop", "user:alice"])
def test_projecting_needs_a_service_account_subject(
    tmp_path: Path, authority: DevAuthority, subject: str
) -> None:
    with pytest.raises(ValueError, match="serviceaccount"):
        authority.workloads.project(tmp_path / "t", subject)
