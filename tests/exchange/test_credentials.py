"""Client credentials against the dev authority: secret, certificate (with and without x5c),
assertion callback, `ConfidentialClient.from_env()`, refusals; and the app-only exchanger.
"""

from __future__ import annotations

import asyncio
import base64
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
import jwt
import pytest

from grpc_obo import (
    ClientCredential,
    ConfidentialClient,
    ConfigurationError,
    TokenExchangeError,
    status_for,
    use_identity,
)
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import ClientCertificate, DevAuthority
from tests.exchange.conftest import FAST_RETRY, Users, client_for, verified_claims
from tests.exchangers import Counted, client_credentials

MakeExchanger = Callable[..., Exchanger]


def certificate_of(authority: DevAuthority, app: str = "original") -> ClientCertificate:
    return authority.world.app(app).certificates[0]


def client_assertion(
    authority: DevAuthority,
    app: str = "original",
    *,
    certificate: ClientCertificate | None = None,
    lifetime: int = 600,
) -> str:
    """A client assertion as a workload-identity token file or a key vault would supply it."""
    cert = certificate or certificate_of(authority, app)
    client_id = authority.world.app(app).client_id
    now = int(time.time())
    thumbprint = base64.urlsafe_b64encode(cert.thumbprint_sha256).decode().rstrip("=")
    assert cert.private_key_pem is not None
    return jwt.encode(
        {
            "aud": authority.token_url,
            "iss": client_id,
            "sub": client_id,
            "exp": now + lifetime,
            "nbf": now,
            "jti": str(uuid.uuid4()),
        },
        cert.private_key_pem,
        algorithm="RS256",
        headers={"x5t#S256": thumbprint},
    )


async def exchange_as_alice(
    authority: DevAuthority, users: Users, exchanger: Exchanger, scope: str
) -> dict[str, object]:
    with use_identity(await users.identity("alice")):
        token = await exchanger.acquire([scope])
    claims = verified_claims(
        authority, token.reveal(), audience=authority.world.app("downstream").client_id
    )
    assert claims["oid"] == authority.world.user("alice").oid
    assert claims["azp"] == authority.world.app("original").client_id
    return claims


# -- each kind of credential works ---------------------------------------------------------


async def test_client_secret(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    claims = await exchange_as_alice(authority, users, make_exchanger(), downstream_scope)
    assert claims["azpacr"] == "1"  # the middle tier proved itself with a secret


@pytest.mark.parametrize("send_chain", [False, True], ids=["thumbprint", "x5c"])
async def test_certificate(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    send_chain: bool,
) -> None:
    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    credential = ClientCredential.certificate(
        private_key_pem=cert.private_key_pem,
        certificate_pem=cert.certificate_pem,
        send_certificate_chain=send_chain,
    )
    exchanger = make_exchanger(client_for(authority, credential))
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"  # certificate


async def test_certificate_file_with_an_encrypted_key(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    key = serialization.load_pem_private_key(cert.private_key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"),
    )
    path = tmp_path / "original.pem"
    path.write_bytes(encrypted + cert.certificate_pem)
    credential = ClientCredential.certificate_file(path, passphrase=b"hunter2")
    exchanger = make_exchanger(client_for(authority, credential))
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"


async def test_an_assertion_from_the_callback_is_reused_until_shortly_before_it_expires(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    calls: list[str] = []

    def assertion() -> str:
        calls.append(client_assertion(authority))
        return calls[-1]

    exchanger = make_exchanger(client_for(authority, ClientCredential.assertion(assertion)))
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"
    await exchange_as_alice(authority, users, exchanger, downstream_scope)  # a new user token
    assert len(calls) == 1  # 600 s left: reused, as Microsoft.Identity.Web caches assertions
    assert authority.requests.count(grant="obo", ok=True) == 2


async def test_an_assertion_close_to_its_expiry_is_asked_for_again(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    calls: list[str] = []

    def assertion() -> str:
        # 200 s left: inside the 300 s margin, so never reused (but still sent: not expired).
        calls.append(client_assertion(authority, lifetime=200))
        return calls[-1]

    exchanger = make_exchanger(client_for(authority, ClientCredential.assertion(assertion)))
    await exchange_as_alice(authority, users, exchanger, downstream_scope)
    await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert len(calls) == 2 and calls[0] != calls[1]


# -- ConfidentialClient.from_env ------------------------------------------------------------


def base_env(authority: DevAuthority) -> dict[str, str]:
    return {
        "AZURE_TENANT_ID": authority.tenant_id,
        "AZURE_CLIENT_ID": authority.world.app("original").client_id,
        "AZURE_AUTHORITY_HOST": authority.base_url,
    }


async def test_from_env_with_a_secret(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    env = {**base_env(authority), "AZURE_CLIENT_SECRET": authority.world.app("original").secrets[0]}
    client = ConfidentialClient.from_env(env, ca_file=str(authority.ca_file))
    assert client.credential.kind == "secret"
    assert client.authority == f"{authority.base_url}/{authority.tenant_id}"
    claims = await exchange_as_alice(authority, users, make_exchanger(client), downstream_scope)
    assert claims["azpacr"] == "1"


@pytest.mark.parametrize("send_chain", ["", "true"])
async def test_from_env_with_a_certificate_file(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
    send_chain: str,
) -> None:
    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    path = tmp_path / "original.pem"
    path.write_bytes(cert.private_key_pem + cert.certificate_pem)
    env = {
        **base_env(authority),
        "AZURE_CLIENT_CERTIFICATE_PATH": str(path),
        "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": send_chain,
    }
    client = ConfidentialClient.from_env(env, ca_file=str(authority.ca_file))
    assert client.credential.kind == "certificate"
    claims = await exchange_as_alice(authority, users, make_exchanger(client), downstream_scope)
    assert claims["azpacr"] == "2"


async def test_from_env_with_a_federated_token_file_rereads_it(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    """Workload identity rotates the file's token: every request must read the current one.
    What is not a JWT with an `exp` is never sent."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("not-a-jwt\n", encoding="utf-8")
    env = {**base_env(authority), "AZURE_FEDERATED_TOKEN_FILE": str(token_file)}
    client = ConfidentialClient.from_env(env, ca_file=str(authority.ca_file))
    assert client.credential.kind == "federated_token_file"
    exchanger = make_exchanger(client)
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert caught.value.error == "credential_unavailable"
    assert authority.requests.count(grant="obo") == 0
    token_file.write_text(client_assertion(authority) + "\n", encoding="utf-8")
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"


@pytest.mark.parametrize(
    ("drop", "add"),
    [
        ("AZURE_TENANT_ID", {}),
        ("AZURE_CLIENT_ID", {}),
        (None, {}),  # no credential at all
        (None, {"AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/cert.pem"}),
        (None, {"AZURE_CLIENT_SECRET": "s", "AZURE_AUTHORITY_HOST": "http://insecure"}),
    ],
)
def test_from_env_misconfiguration_fails_at_start_up(
    authority: DevAuthority, drop: str | None, add: dict[str, str]
) -> None:
    env = {**base_env(authority), "AZURE_CLIENT_SECRET": "s"} if drop else base_env(authority)
    env.update(add)
    if drop:
        del env[drop]
    with pytest.raises(ConfigurationError):
        ConfidentialClient.from_env(env)


@pytest.mark.parametrize("tenant", ["northwind", "common", "contoso.", "{tid}"])
def test_from_env_refuses_a_tenant_entra_would_not_take(
    authority: DevAuthority, tenant: str
) -> None:
    env = {**base_env(authority), "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": tenant}
    with pytest.raises(ConfigurationError) as caught:
        ConfidentialClient.from_env(env)
    assert str(caught.value).startswith("AZURE_TENANT_ID:")


@pytest.mark.parametrize(
    "tenant", ["7F3A1C2E-5B44-4E1A-9D1C-0C0FFEE00001", "contoso.onmicrosoft.com", "organizations"]
)
def test_from_env_takes_a_guid_a_verified_domain_or_organizations(tenant: str) -> None:
    env = {
        "AZURE_TENANT_ID": tenant,
        "AZURE_CLIENT_ID": "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1",
        "AZURE_CLIENT_SECRET": "s3cr3t-value",
    }
    assert ConfidentialClient.from_env(env).tenant == tenant


def test_from_env_defaults_to_entra_and_reads_nothing_else() -> None:
    env = {
        "AZURE_TENANT_ID": "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001",
        "AZURE_CLIENT_ID": "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1",
        "AZURE_CLIENT_SECRET": "s3cr3t-value",
    }
    client = ConfidentialClient.from_env(env)
    assert client.authority_host == "https://login.microsoftonline.com"
    assert client.ca_file is None


def pfx_of(authority: DevAuthority, password: bytes | None) -> bytes:
    """The Original API's certificate and key as a PKCS12 (.pfx) file would hold them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    key = serialization.load_pem_private_key(cert.private_key_pem, password=None)
    return pkcs12.serialize_key_and_certificates(
        b"original",
        key,  # type: ignore[arg-type]
        cert.certificate,
        None,
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("name", "password"), [("original.pfx", b"pfx-pa55word"), ("original.p12", None)]
)
async def test_from_env_with_a_pkcs12_certificate(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
    name: str,
    password: bytes | None,
) -> None:
    """AZURE_CLIENT_CERTIFICATE_PATH takes PKCS12 as azure-identity does, with its password."""
    path = tmp_path / name
    path.write_bytes(pfx_of(authority, password))
    env = {**base_env(authority), "AZURE_CLIENT_CERTIFICATE_PATH": str(path)}
    if password:
        env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = password.decode()
    client = ConfidentialClient.from_env(env, ca_file=str(authority.ca_file))
    assert client.credential.kind == "certificate"
    assert password is None or password.decode() not in repr(client.credential)
    claims = await exchange_as_alice(authority, users, make_exchanger(client), downstream_scope)
    assert claims["azpacr"] == "2"


def test_a_pkcs12_file_with_the_wrong_password_names_the_variable_and_file(
    authority: DevAuthority, tmp_path: Path
) -> None:
    path = tmp_path / "original.pfx"
    path.write_bytes(pfx_of(authority, b"right-pa55word"))
    env = {
        **base_env(authority),
        "AZURE_CLIENT_CERTIFICATE_PATH": str(path),
        "AZURE_CLIENT_CERTIFICATE_PASSWORD": "wrong-pa55word",
    }
    with pytest.raises(ConfigurationError) as caught:
        ConfidentialClient.from_env(env)
    message = str(caught.value)
    assert message.startswith("AZURE_CLIENT_CERTIFICATE_PATH:")
    assert str(path) in message and "AZURE_CLIENT_CERTIFICATE_PASSWORD" in message
    assert "pa55word" not in message


def test_a_certificate_without_an_rsa_key_is_refused(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ec.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(ConfigurationError, match="must be RSA") as caught:
        ClientCredential.certificate_file(path)
    assert "ec.pem" in str(caught.value)


def test_from_env_accepts_a_bare_authority_host_as_azure_identity_does() -> None:
    env = {
        "AZURE_TENANT_ID": "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001",
        "AZURE_CLIENT_ID": "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1",
        "AZURE_CLIENT_SECRET": "s3cr3t-value",
        "AZURE_AUTHORITY_HOST": "login.microsoftonline.us/",
    }
    client = ConfidentialClient.from_env(env)
    assert client.authority_host == "https://login.microsoftonline.us"
    assert (
        client.authority == "https://login.microsoftonline.us/7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
    )
    direct = replace(client, authority_host="login.chinacloudapi.cn")
    assert direct.authority_host == "https://login.chinacloudapi.cn"


async def test_from_env_reads_the_ca_file_variable(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    """GRPC_OBO_CA_FILE: the same variable ValidatorOptions.from_env() reads, so one env file
    configures both sides of a middle tier."""
    env = {
        **base_env(authority),
        "AZURE_CLIENT_SECRET": authority.world.app("original").secrets[0],
        "GRPC_OBO_CA_FILE": str(authority.ca_file),
    }
    client = ConfidentialClient.from_env(env)
    assert client.ca_file == str(authority.ca_file)
    claims = await exchange_as_alice(authority, users, make_exchanger(client), downstream_scope)
    assert claims["azpacr"] == "1"


@pytest.mark.parametrize(
    ("add", "variable"),
    [
        (
            {"AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/cert.pem"},
            "AZURE_CLIENT_CERTIFICATE_PATH",
        ),
        ({"AZURE_CLIENT_SECRET": "s3cret-value", "AZURE_TENANT_ID": "common"}, "AZURE_TENANT_ID"),
        ({"AZURE_CLIENT_SECRET": "s3cret-value", "AZURE_CLIENT_ID": "nope"}, "AZURE_CLIENT_ID"),
        (
            {"AZURE_CLIENT_SECRET": "s3cret-value", "AZURE_AUTHORITY_HOST": "http://x"},
            "AZURE_AUTHORITY_HOST",
        ),
        (
            {"AZURE_CLIENT_SECRET": "s3cret-value", "GRPC_OBO_CA_FILE": "/nonexistent/ca.pem"},
            "GRPC_OBO_CA_FILE",
        ),
    ],
)
def test_from_env_errors_name_the_variable_never_the_secret(
    authority: DevAuthority, add: dict[str, str], variable: str
) -> None:
    env = {**base_env(authority), **add}
    with pytest.raises(ConfigurationError) as caught:
        ConfidentialClient.from_env(env)
    assert str(caught.value).startswith(f"{variable}:")
    assert "s3cret-value" not in str(caught.value)
    if variable.endswith("_PATH") or variable.endswith("_FILE"):
        assert "/nonexistent/" in str(caught.value)


# -- refusals --------------------------------------------------------------------------------


async def test_wrong_secret_is_invalid_client_and_not_retried(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger(client_for(authority, ClientCredential.secret("dev-wrong-secret")))
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert type(caught.value) is TokenExchangeError
    assert caught.value.error == "invalid_client"
    assert 7000215 in caught.value.error_codes
    assert status_for(caught.value) is grpc.StatusCode.INTERNAL
    assert authority.requests.count(endpoint="token") == 1


async def test_unregistered_certificate_is_invalid_client(
    authority: DevAuthority, users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    stranger = ClientCertificate.generate("stranger")
    assert stranger.private_key_pem is not None
    credential = ClientCredential.certificate(
        private_key_pem=stranger.private_key_pem, certificate_pem=stranger.certificate_pem
    )
    exchanger = make_exchanger(client_for(authority, credential))
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert (caught.value.error, caught.value.error_codes) == ("invalid_client", (700027,))
    assert authority.requests.count(endpoint="token") == 1


def test_certificate_key_must_match_the_certificate(authority: DevAuthority) -> None:
    other = ClientCertificate.generate("other")
    assert other.private_key_pem is not None
    with pytest.raises(ConfigurationError):
        ClientCredential.certificate(
            private_key_pem=other.private_key_pem,
            certificate_pem=certificate_of(authority).certificate_pem,
        )
    with pytest.raises(ConfigurationError):
        ClientCredential.certificate(private_key_pem=b"garbage", certificate_pem=b"garbage")


def test_credentials_never_show_their_secret(authority: DevAuthority, tmp_path: Path) -> None:
    secret = authority.world.app("original").secrets[0]
    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    credentials = [
        ClientCredential.secret(secret),
        ClientCredential.certificate(
            private_key_pem=cert.private_key_pem, certificate_pem=cert.certificate_pem
        ),
        ClientCredential.assertion(lambda: "assertion"),
    ]
    key_body = cert.private_key_pem.decode().splitlines()[1]
    for credential in credentials:
        client = client_for(authority, credential)
        for text in (repr(credential), str(credential), repr(client), str(client)):
            assert secret not in text
            assert key_body not in text
        with pytest.raises(TypeError):
            pickle.dumps(credential)


@pytest.mark.parametrize(
    "options",
    [
        {"client_id": "original"},
        {"tenant": "common"},
        {"tenant": "consumers"},
        {"tenant": "northwind"},
        {"tenant": "contoso."},
        {"tenant": "-contoso.com"},
        {"tenant": "contoso..com"},
        {"authority_host": "http://127.0.0.1"},
        {"client_capabilities": ("cp 1",)},
        {"http_timeout": 0},
    ],
)
def test_confidential_client_is_checked_at_construction(
    authority: DevAuthority, options: dict[str, object]
) -> None:
    settings: dict[str, object] = {
        "client_id": authority.world.app("original").client_id,
        "tenant": authority.tenant_id,
        "credential": ClientCredential.secret("x"),
        **options,
    }
    with pytest.raises(ConfigurationError):
        ConfidentialClient(**settings)  # type: ignore[arg-type]


# -- app-only (client credentials) -----------------------------------------------------------


def daemon_client(
    authority: DevAuthority, credential: ClientCredential | None = None
) -> ConfidentialClient:
    daemon = authority.world.app("daemon")
    return ConfidentialClient(
        client_id=daemon.client_id,
        tenant=authority.tenant_id,
        credential=credential or ClientCredential.secret(daemon.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )


@pytest.mark.parametrize("kind", ["secret", "certificate"])
async def test_app_only_token_has_roles_and_is_cached(
    authority: DevAuthority, users: Users, kind: str
) -> None:
    downstream = authority.world.app("downstream")
    daemon = authority.world.app("daemon")
    credential = None
    if kind == "certificate":
        cert = certificate_of(authority, "daemon")
        assert cert.private_key_pem is not None
        credential = ClientCredential.certificate(
            private_key_pem=cert.private_key_pem, certificate_pem=cert.certificate_pem
        )
    client = daemon_client(authority, credential)
    scope = f"{downstream.app_id_uri}/.default"
    counted = Counted()
    async with client_credentials(client, retry=FAST_RETRY, observer=counted) as exchanger:
        # A user in the context changes nothing: app-only never acts for a user.
        with use_identity(await users.identity("alice")):
            tokens = await asyncio.gather(*(exchanger.acquire([scope]) for _ in range(50)))
        again = await exchanger.acquire([scope])
        with pytest.raises(ConfigurationError):
            await exchanger.acquire([f"{downstream.app_id_uri}/Data.Read"])
    assert {t.reveal() for t in tokens} == {again.reveal()}
    claims = verified_claims(authority, again.reveal(), audience=downstream.client_id)
    assert claims["idtyp"] == "app"
    assert claims["roles"] == ["Data.Read.All"]
    assert claims["azp"] == daemon.client_id
    assert "scp" not in claims
    assert claims["oid"] != authority.world.user("alice").oid
    assert authority.requests.count(grant="client_credentials") == 1
    assert counted.exchanges == 1


async def test_app_only_retries_a_transient_failure(authority: DevAuthority) -> None:
    authority.faults.fail(503, grant="client_credentials", times=1)
    client = daemon_client(authority)
    scope = f"{authority.world.app('downstream').app_id_uri}/.default"
    async with client_credentials(client, retry=FAST_RETRY) as exchanger:
        await exchanger.acquire([scope])
    assert authority.requests.count(grant="client_credentials") == 2
