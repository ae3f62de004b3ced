"""Unmodified MSAL accepts the dev authority as an Entra authority: ROPC, OBO, client
credentials (secret and certificate) and refresh, and the authority runs in a thread or a loop."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import jwt
import msal
import pytest
import requests

from grpc_obo.devauthority import DevAuthority, default_world
from tests.devauthority.conftest import TIMEOUT, Http, Msal, scope


def _certificate(authority: DevAuthority, name: str, *, sha256: bool) -> dict[str, str]:
    cert = authority.world.app(name).certificates[0]
    assert cert.private_key_pem is not None
    if sha256:
        # MSAL sends x5t#S256 and signs with PS256 when given the public certificate.
        return {
            "private_key": cert.private_key_pem.decode(),
            "public_certificate": cert.certificate_pem.decode(),
        }
    return {"private_key": cert.private_key_pem.decode(), "thumbprint": cert.thumbprint_hex}


def _capture_client_assertions(app: msal.ClientApplication) -> list[str]:
    """Remember every `client_assertion` MSAL posts (wrapping its own requests session)."""
    seen: list[str] = []
    session = app.http_client
    while hasattr(session, "http_client"):  # MSAL wraps the given client for throttling
        session = session.http_client
    original_post = session.post

    def post(url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if isinstance(data, dict) and "client_assertion" in data:
            seen.append(data["client_assertion"])
        return original_post(url, *args, **kwargs)

    session.post = post
    return seen


class TestRopc:
    def test_public_client_signs_alice_in(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        alice, original = authority.world.user("alice"), authority.world.app("original")
        result = msal_apps.sign_in("alice")

        assert result["token_type"] == "Bearer"
        assert result["id_token_claims"]["oid"] == alice.oid
        assert result["id_token_claims"]["preferred_username"] == alice.username
        assert result["refresh_token"]
        claims = http.verify(result["access_token"], audience=original.client_id)
        assert claims["oid"] == alice.oid
        assert claims["tid"] == alice.tenant_id
        assert claims["scp"] == "access_as_user"
        assert claims["azp"] == authority.world.app("client").client_id
        assert claims["azpacr"] == "0"
        assert authority.requests.count(grant="password", user="alice", ok=True) == 1

    def test_msal_keeps_the_account(self, authority: DevAuthority, msal_apps: Msal) -> None:
        app = msal_apps.public()
        alice = authority.world.user("alice")
        app.acquire_token_by_username_password(
            alice.username, alice.password, scopes=[scope(authority, "original")]
        )
        accounts = app.get_accounts()
        assert [a["username"] for a in accounts] == [alice.username]
        assert accounts[0]["home_account_id"] == f"{alice.oid}.{alice.tenant_id}"

    def test_wrong_password_is_refused(self, authority: DevAuthority, msal_apps: Msal) -> None:
        result = msal_apps.public().acquire_token_by_username_password(
            "alice@contoso.example", "not-her-password", scopes=[scope(authority, "original")]
        )
        assert result["error"] == "invalid_grant"
        assert result["error_codes"] == [50126]

    def test_user_of_another_tenant_is_refused_by_the_home_tenant(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        carol = authority.world.user("carol")
        result = msal_apps.public().acquire_token_by_username_password(
            carol.username, carol.password, scopes=[scope(authority, "original")]
        )
        assert result["error_codes"] == [50034]


class TestOnBehalfOf:
    @pytest.mark.parametrize(
        ("credential", "azpacr"),
        [("secret", "1"), ("thumbprint", "2"), ("public_certificate", "2")],
    )
    def test_original_exchanges_alices_token_for_downstream(
        self,
        authority: DevAuthority,
        http: Http,
        msal_apps: Msal,
        credential: str,
        azpacr: str,
    ) -> None:
        original, downstream = authority.world.app("original"), authority.world.app("downstream")
        alice_token = msal_apps.sign_in("alice")["access_token"]
        incoming = http.verify(alice_token, audience=original.client_id)
        given: Any = (
            original.secrets[0]
            if credential == "secret"
            else _certificate(authority, "original", sha256=credential == "public_certificate")
        )
        app = msal_apps.confidential("original", credential=given)

        result = app.acquire_token_on_behalf_of(
            alice_token, scopes=[scope(authority, "downstream")]
        )

        assert "access_token" in result, result
        claims = http.verify(result["access_token"], audience=downstream.client_id)
        assert (claims["oid"], claims["tid"]) == (incoming["oid"], incoming["tid"])
        assert claims["azp"] == original.client_id
        assert claims["azpacr"] == azpacr
        assert claims["scp"] == "Data.Read"
        assert claims["sub"] != incoming["sub"]  # pairwise: another app, another sub
        assert authority.requests.count(grant="obo", client_id=original.client_id, ok=True) == 1

    def test_public_certificate_sends_x5t_s256_with_ps256(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        alice_token = msal_apps.sign_in("alice")["access_token"]
        app = msal_apps.confidential(
            "original", credential=_certificate(authority, "original", sha256=True)
        )
        sent = _capture_client_assertions(app)

        result = app.acquire_token_on_behalf_of(
            alice_token, scopes=[scope(authority, "downstream")]
        )

        assert "access_token" in result, result
        assert len(sent) == 1
        header = jwt.get_unverified_header(sent[0])
        assert header["alg"] == "PS256"
        assert "x5t#S256" in header

    def test_thumbprint_sends_x5t_with_rs256(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        alice_token = msal_apps.sign_in("alice")["access_token"]
        app = msal_apps.confidential(
            "original", credential=_certificate(authority, "original", sha256=False)
        )
        sent = _capture_client_assertions(app)
        result = app.acquire_token_on_behalf_of(
            alice_token, scopes=[scope(authority, "downstream")]
        )
        assert "access_token" in result, result
        header = jwt.get_unverified_header(sent[0])
        assert header["alg"] == "RS256"
        assert "x5t" in header


class TestClientCredentials:
    @pytest.mark.parametrize(("certificate", "azpacr"), [(False, "1"), (True, "2")])
    def test_daemon_gets_an_app_only_token(
        self,
        authority: DevAuthority,
        http: Http,
        msal_apps: Msal,
        certificate: bool,
        azpacr: str,
    ) -> None:
        daemon, downstream = authority.world.app("daemon"), authority.world.app("downstream")
        given: Any = _certificate(authority, "daemon", sha256=True) if certificate else None
        app = msal_apps.confidential("daemon", credential=given)

        result = app.acquire_token_for_client(scopes=[f"{downstream.app_id_uri}/.default"])

        assert "access_token" in result, result
        claims = http.verify(result["access_token"], audience=downstream.client_id)
        assert claims["roles"] == ["Data.Read.All"]
        assert claims["idtyp"] == "app"
        assert "scp" not in claims
        assert claims["azp"] == daemon.client_id
        assert claims["azpacr"] == azpacr
        assert claims["oid"] == claims["sub"]  # the service principal
        assert claims["tid"] == authority.tenant_id
        assert authority.requests.count(grant="client_credentials", ok=True) == 1


class TestRefresh:
    def test_acquire_token_silent_with_force_refresh(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        app = msal_apps.public()
        alice = authority.world.user("alice")
        scopes = [scope(authority, "original")]
        first = app.acquire_token_by_username_password(alice.username, alice.password, scopes)
        account = app.get_accounts()[0]

        again = app.acquire_token_silent(scopes, account=account, force_refresh=True)

        assert again is not None and "access_token" in again, again
        assert again["access_token"] != first["access_token"]
        claims = http.verify(
            again["access_token"], audience=authority.world.app("original").client_id
        )
        assert claims["oid"] == alice.oid
        assert claims["scp"] == "access_as_user"
        assert authority.requests.count(grant="refresh_token", user="alice", ok=True) == 1

    def test_acquire_token_by_refresh_token(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        refresh_token = msal_apps.sign_in("bob")["refresh_token"]
        result = msal_apps.public().acquire_token_by_refresh_token(
            refresh_token, scopes=[scope(authority, "original")]
        )
        assert "access_token" in result, result
        claims = http.verify(
            result["access_token"], audience=authority.world.app("original").client_id
        )
        assert claims["oid"] == authority.world.user("bob").oid

    def test_refresh_token_of_another_client_is_refused(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        refresh_token = msal_apps.sign_in("alice")["refresh_token"]
        original = authority.world.app("original")
        response = http.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": original.client_id,
                "client_secret": original.secrets[0],
                "scope": scope(authority, "original"),
            }
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        # The owner's refresh token still works afterwards.
        result = msal_apps.public().acquire_token_by_refresh_token(
            refresh_token, scopes=[scope(authority, "original")]
        )
        assert "access_token" in result, result

    def test_unknown_refresh_token_is_refused(self, authority: DevAuthority, http: Http) -> None:
        response = http.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": "0.dev.made-up",
                "client_id": authority.world.app("client").client_id,
            }
        )
        assert response.status_code == 400
        assert response.json()["error_codes"] == [9002313]


class TestLifecycle:
    def test_running_in_thread_serves_sync_msal_and_stops(self) -> None:
        authority = DevAuthority(world=default_world(with_certificates=False))
        idle = requests.Session()  # holds a keep-alive connection across the stop
        with authority.running_in_thread() as running:
            idle.trust_env = False
            assert idle.get(running.jwks_url, timeout=TIMEOUT, verify=running.ca_file).ok
            http = running.msal_http_client()
            try:
                alice = running.world.user("alice")
                app = msal.PublicClientApplication(
                    running.world.app("client").client_id,
                    authority=running.authority_url,
                    instance_discovery=False,
                    http_client=http,
                    timeout=TIMEOUT,
                )
                result = app.acquire_token_by_username_password(
                    alice.username, alice.password, scopes=[scope(running, "original")]
                )
                assert "access_token" in result, result
                base_url = running.base_url
            finally:
                http.close()

        idle.close()
        # The server side of the idle connection was closed, not leaked (a ResourceWarning
        # from the collection would fail this test).
        gc.collect()
        with pytest.raises(RuntimeError):
            _ = authority.port
        with requests.Session() as session, pytest.raises(requests.ConnectionError):
            session.get(base_url, timeout=TIMEOUT, verify=False)

    async def test_async_context_manager_serves_and_cleans_up(self) -> None:
        async with DevAuthority(world=default_world(with_certificates=False)) as authority:
            ca_file = authority.ca_file
            connector = aiohttp.TCPConnector(ssl=authority.client_ssl_context())
            timeout = aiohttp.ClientTimeout(total=TIMEOUT)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(authority.discovery_url) as response,
            ):
                assert response.status == 200
                document = await response.json()
            assert document["issuer"] == authority.issuer(2)

            # MSAL is synchronous (its constructor already fetches discovery): off the loop
            # that serves the authority.
            alice = authority.world.user("alice")
            http = authority.msal_http_client()

            def sign_in() -> dict[str, Any]:
                app = msal.PublicClientApplication(
                    authority.world.app("client").client_id,
                    authority=authority.authority_url,
                    instance_discovery=False,
                    http_client=http,
                    timeout=TIMEOUT,
                )
                result: dict[str, Any] = app.acquire_token_by_username_password(
                    alice.username, alice.password, [scope(authority, "original")]
                )
                return result

            try:
                result = await asyncio.to_thread(sign_in)
            finally:
                http.close()
            assert "access_token" in result, result
            assert ca_file.exists()
            with pytest.raises(RuntimeError, match="already running"):
                await authority.start()

        assert not ca_file.exists()  # its own temporary directory is removed
        with pytest.raises(RuntimeError):
            _ = authority.port
