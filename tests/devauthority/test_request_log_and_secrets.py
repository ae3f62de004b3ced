"""The request log counts what tests need (per grant, user, client) and, like every log record
the authority writes, holds no password, client secret, token or client assertion."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import jwt
import msal
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from grpc_obo.devauthority import DevAuthority, LoggedRequest
from tests.devauthority.conftest import Http, Msal, obo_form, ropc_form, scope


class TestRequestLog:
    def test_counts_per_grant_user_and_client(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        original, daemon = authority.world.app("original"), authority.world.app("daemon")
        alice_token = msal_apps.sign_in("alice")["access_token"]
        msal_apps.sign_in("bob")
        middle = msal_apps.confidential("original")
        for _ in range(2):
            middle.acquire_token_on_behalf_of(alice_token, [scope(authority, "downstream")])
        msal_apps.confidential("daemon").acquire_token_for_client(
            [f"{authority.world.app('downstream').app_id_uri}/.default"]
        )
        http.token(ropc_form(authority, "bob", password="wrong"))

        log = authority.requests
        assert log.by_grant() == {"password": 3, "obo": 2, "client_credentials": 1}
        assert log.count(endpoint="token") == 6
        assert log.count(grant="password", user="alice") == 1
        assert log.count(grant="password", user="bob") == 2
        assert log.count(grant="password", user="bob", ok=False) == 1
        assert log.count(grant="obo", user="alice", client_id=original.client_id) == 2
        alice_oid = authority.world.user("alice").oid
        assert log.count(endpoint="token", user="alice") == 3
        assert log.count(endpoint="token", user="alice@contoso.example") == 3
        assert log.count(endpoint="token", user=alice_oid) == 3
        # MSAL's user-realm look-up before a password sign-in is about alice too.
        assert log.count(endpoint="userrealm", user="alice") == 1
        assert log.count(client_id=daemon.client_id, ok=True) == 1
        # MSAL's own discovery requests are logged too.
        assert log.count(endpoint="discovery") >= 1

    def test_entries_describe_the_request(self, authority: DevAuthority, http: Http) -> None:
        http.token(ropc_form(authority, "alice", password="wrong"))
        entry = authority.requests.entries[-1]
        assert isinstance(entry, LoggedRequest)
        assert (entry.method, entry.endpoint, entry.status) == ("POST", "token", 400)
        assert entry.path == f"/{authority.tenant_id}/oauth2/v2.0/token"
        assert entry.grant == "password"
        assert entry.client_id == authority.world.app("client").client_id
        assert entry.user_oid == authority.world.user("alice").oid
        assert entry.username == "alice@contoso.example"
        assert scope(authority, "original") in entry.scopes
        assert (entry.error, entry.error_code) == ("invalid_grant", 50126)
        assert entry.at == pytest.approx(time.time(), abs=30)

    def test_clear(self, authority: DevAuthority, http: Http) -> None:
        http.get(authority.discovery_url)
        assert authority.requests.count() == 1
        authority.requests.clear()
        assert authority.requests.entries == []


def _capture_client_assertions(app: msal.ClientApplication, into: list[str]) -> None:
    session = app.http_client
    while hasattr(session, "http_client"):
        session = session.http_client
    post = session.post

    def recording(url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if isinstance(data, dict) and "client_assertion" in data:
            value = data["client_assertion"]  # MSAL posts its own assertions as bytes
            into.append(value.decode() if isinstance(value, bytes) else value)
        return post(url, *args, **kwargs)

    session.post = recording


def test_no_secret_reaches_a_log_record_or_the_request_log(
    authority: DevAuthority,
    http: Http,
    msal_apps: Msal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full run (sign-ins, refresh, OBO by secret and certificate, client credentials, Basic
    auth, refusals, faults, a challenge) logged at DEBUG leaks none of the secrets involved."""
    caplog.set_level(logging.DEBUG)
    world = authority.world
    original, daemon, downstream = (
        world.app("original"),
        world.app("daemon"),
        world.app("downstream"),
    )
    wrong_password, wrong_secret = f"pw-{uuid.uuid4()}", f"dev-{uuid.uuid4()}"
    secrets: list[str] = [wrong_password, wrong_secret]
    secrets += [user.password for user in world.users]
    secrets += [secret for app in world.apps for secret in app.secrets]
    assertions: list[str] = []
    results: list[dict[str, Any]] = []

    # Sign-ins (with refresh and id tokens), a refresh, and a wrong password.
    public = msal_apps.public()
    for name in ("alice", "bob"):
        user = world.user(name)
        results.append(
            public.acquire_token_by_username_password(
                user.username, user.password, [scope(authority, "original")]
            )
        )
    alice_account = public.get_accounts(username="alice@contoso.example")[0]
    results.append(
        public.acquire_token_silent(
            [scope(authority, "original")], account=alice_account, force_refresh=True
        )
        or {}
    )
    results.append(
        public.acquire_token_by_username_password(
            "alice@contoso.example", wrong_password, [scope(authority, "original")]
        )
    )
    alice_token = results[0]["access_token"]

    # OBO by secret and by certificate, a wrong secret, a forged assertion, a challenge.
    cert = original.certificates[0]
    assert cert.private_key_pem is not None
    by_cert = msal_apps.confidential(
        "original",
        credential={
            "private_key": cert.private_key_pem.decode(),
            "public_certificate": cert.certificate_pem.decode(),
        },
    )
    _capture_client_assertions(by_cert, assertions)
    results.append(
        by_cert.acquire_token_on_behalf_of(alice_token, [scope(authority, "downstream")])
    )
    results.append(
        msal_apps.confidential("original").acquire_token_on_behalf_of(
            results[1]["access_token"], [scope(authority, "downstream")]
        )
    )
    results.append(
        msal_apps.confidential("original", credential=wrong_secret).acquire_token_on_behalf_of(
            alice_token, [scope(authority, "downstream")]
        )
    )
    forged = alice_token[:-8] + "AAAAAAAA"
    http.token(obo_form(authority, forged))
    authority.faults.require_claims("alice")
    http.token(obo_form(authority, alice_token))
    authority.faults.clear()

    # Client credentials by secret, by certificate (hand-made assertion), and Basic auth.
    results.append(
        msal_apps.confidential("daemon").acquire_token_for_client(
            [f"{downstream.app_id_uri}/.default"]
        )
    )
    daemon_cert = daemon.certificates[0]
    assert daemon_cert.private_key_pem is not None
    now = int(time.time())
    hand_made = jwt.encode(
        {
            "aud": authority.token_url,
            "iss": daemon.client_id,
            "sub": daemon.client_id,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 300,
        },
        load_pem_private_key(daemon_cert.private_key_pem, None),  # type: ignore[arg-type]
        algorithm="RS256",
        headers={"x5t": jwt.utils.base64url_encode(daemon_cert.thumbprint_sha1).decode()},
    )
    assertions.append(hand_made)
    cc_form = {
        "grant_type": "client_credentials",
        "client_id": daemon.client_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": hand_made,
        "scope": f"{downstream.app_id_uri}/.default",
    }
    results.append(http.token(cc_form).json())
    basic = http.token(
        {"grant_type": "client_credentials", "scope": f"{downstream.app_id_uri}/.default"},
        auth=(daemon.client_id, daemon.secrets[0]),
    )
    results.append(basic.json())

    # Faults on the way.
    authority.faults.fail(503)
    http.token(ropc_form(authority, "alice"))
    authority.faults.throttle()
    http.token(ropc_form(authority, "bob"))

    tokens = [
        result[kind]
        for result in results
        for kind in ("access_token", "refresh_token", "id_token")
        if kind in result
    ]
    assert len(tokens) >= 12, "the run must have produced the tokens it checks for"
    assert len(assertions) >= 2
    secrets += tokens + assertions
    # A token's signature or payload alone is a leak too.
    secrets += [part for token in tokens + assertions for part in token.split(".")[1:]]
    secrets += [forged]
    secrets += [
        line
        for app in world.apps
        for c in app.certificates
        for line in (c.private_key_pem or b"").decode().splitlines()
        if "PRIVATE KEY" not in line
    ]

    authority_records = [r for r in caplog.records if r.name.startswith("grpc_obo")]
    assert len(authority_records) >= 15, "the authority logged the run"
    for record in caplog.records:
        text = " ".join(
            [record.getMessage(), repr(record.args), record.exc_text or "", str(record.msg)]
        )
        for secret in secrets:
            assert secret not in text, f"a secret reached the log via {record.name}"
    logged = repr(authority.requests.entries)
    for secret in secrets:
        assert secret not in logged, "a secret reached the request log"
