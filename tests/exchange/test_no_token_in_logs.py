"""Nothing the exchange path logs, raises or reprs contains a token, a secret or a key.

One full flow at DEBUG for every logger (ours, MSAL's, requests', the dev authority's, which
runs in this process): successes, cache hits, retries, every kind of refusal, Redis, a
certificate credential and app-only tokens. Then every token minted or returned, the client
secrets and the certificate keys are searched for in every record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from grpc_obo import (
    ClientCredential,
    ConfidentialClient,
    GrpcOboError,
    Identity,
    IdentityKind,
    RedisTokenStore,
    SecretToken,
    TokenCache,
    TokenSealer,
    use_identity,
)
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import DevAuthority
from tests.exchange.conftest import FAST_RETRY, Users, client_for
from tests.exchangers import client_credentials

MakeExchanger = Callable[..., Exchanger]


@pytest.mark.redis
async def test_a_full_flow_logs_no_token_secret_or_key(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_url: str,
    redis_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("msal", "urllib3", "grpc_obo", "aiocache"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    original, daemon = authority.world.app("original"), authority.world.app("daemon")
    cert = original.certificates[0]
    assert cert.private_key_pem is not None
    returned: list[SecretToken] = []
    errors: list[BaseException] = []

    async def attempt(exchanger: Exchanger, identity: Identity, scope: str) -> None:
        try:
            returned.append(await exchanger.acquire([scope], identity=identity))
        except GrpcOboError as exc:
            errors.append(exc)

    sealer = TokenSealer(TokenSealer.generate_key())
    store = RedisTokenStore.from_url(redis_url, sealer=sealer, namespace=redis_namespace)
    shared = make_exchanger(cache=TokenCache(store=store))
    local = make_exchanger()
    by_certificate = make_exchanger(
        client_for(
            authority,
            ClientCredential.certificate(
                private_key_pem=cert.private_key_pem,
                certificate_pem=cert.certificate_pem,
                send_certificate_chain=True,
            ),
        )
    )
    wrong_secret = make_exchanger(client_for(authority, ClientCredential.secret("devWrong-1")))

    alice, bob, carol = [await users.identity(u) for u in ("alice", "bob", "carol")]
    write = f"{authority.world.app('downstream').app_id_uri}/Data.Write"
    expired = Identity(
        tid=alice.tid,
        oid=alice.oid,
        sub=alice.sub,
        kind=IdentityKind.USER,
        token=SecretToken(users.token("alice", lifetime=-600)),
    )

    for exchanger in (shared, local, by_certificate, wrong_secret):
        await attempt(exchanger, alice, downstream_scope)
        await attempt(exchanger, alice, downstream_scope)  # cache hit
    authority.faults.fail(503, user="bob", times=1)
    await attempt(local, bob, downstream_scope)  # retried
    authority.faults.throttle(retry_after=0, user="carol", times=None)
    await attempt(local, carol, downstream_scope)  # gives up
    authority.faults.clear()
    authority.faults.drop_connection(user="carol", times=1)
    await attempt(shared, carol, downstream_scope)
    authority.faults.require_claims("bob")
    await attempt(shared, await users.identity("bob"), downstream_scope)  # claims challenge
    await attempt(local, expired, downstream_scope)  # invalid_grant
    await attempt(local, alice, write)  # consent_required
    with use_identity(None):
        await attempt(local, None, downstream_scope)  # type: ignore[arg-type]
    async with client_credentials(
        ConfidentialClient(
            client_id=daemon.client_id,
            tenant=authority.tenant_id,
            credential=ClientCredential.secret(daemon.secrets[0]),
            authority_host=authority.base_url,
            ca_file=str(authority.ca_file),
        ),
        retry=FAST_RETRY,
    ) as app_only:
        returned.append(
            await app_only.acquire([f"{authority.world.app('downstream').app_id_uri}/.default"])
        )

    kinds = {type(e).__name__ for e in errors}
    assert kinds >= {
        "AuthorityUnavailableError",
        "ClaimsChallengeError",
        "InvalidGrantError",
        "TokenExchangeError",
        "MissingIdentityError",
    }
    assert len(returned) >= 8
    for token in returned:
        users.remember(token.reveal())
    secrets = [
        *users.secrets,
        *original.secrets,
        *daemon.secrets,
        "devWrong-1",
        *(line for line in cert.private_key_pem.decode().splitlines() if "-----" not in line),
    ]
    records = caplog.records
    assert any(r.name.startswith("msal") for r in records)  # MSAL really logged at DEBUG
    text = "\n".join(
        [caplog.text]
        + [f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.stack_info or ''}" for r in records]
        + [f"{e!s} {e!r} {vars(e)!r}" for e in errors]
    )
    for secret in secrets:
        assert secret not in text, "a token, secret or key reached a log record or an error"
