"""Client authentication at the token endpoint: which registered app is calling, and how it
proved it (none for a public client, a secret, a certificate-signed assertion, or an assertion
from a federated issuer). The answer includes Entra's `azpacr` (0, 1 or 2) for the tokens.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeGuard

import jwt
from cryptography import x509

from grpc_obo.devauthority._federation import Federation, FederationRefusal
from grpc_obo.devauthority._oauth import OAuthError, missing
from grpc_obo.devauthority._registrations import App
from grpc_obo.devauthority._tokens import TokenMinter
from grpc_obo.devauthority._world import World

if TYPE_CHECKING:
    from grpc_obo.devauthority._grants._request import TokenRequest

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_ASSERTION_BYTES = 16 * 1024


def authenticate_client(
    request: TokenRequest,
    tenant: str | None,
    *,
    world: World,
    minter: TokenMinter,
    federation: Federation | None,
    tenancy: Callable[[App, str | None], None],
) -> tuple[App, str]:
    """The calling app and its `azpacr` (0 public, 1 secret, 2 certificate)."""
    client_id = request.get("client_id")
    secret = request.get("client_secret")
    if request.basic_auth is not None:
        basic_id, basic_secret = request.basic_auth
        if client_id and client_id != basic_id:
            raise OAuthError("invalid_client", 7000216, "The client ids do not match.", status=401)
        client_id, secret = basic_id, basic_secret
    if client_id is None:
        raise missing("client_id")
    client = world.find_app(client_id)
    if client is None or not GUID.match(client_id.lower()):
        raise OAuthError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id[:64]}' was not found in the directory "
            f"'{tenant or 'common'}'. This can happen if the application has not been "
            "installed by the administrator of the tenant.",
        )
    tenancy(client, tenant)
    assertion = request.get("client_assertion")
    if client.public_client:
        if secret or assertion:
            raise OAuthError(
                "invalid_request",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should "
                "be presented.",
            )
        return client, "0"
    if assertion is not None:
        if federation is not None and federation.is_federated(assertion, client):
            check_federated_assertion(federation, request, client, assertion)
        else:
            check_client_assertion(request, client, assertion, minter)
        return client, "2"
    if secret is not None:
        if not any(hmac.compare_digest(secret.encode(), s.encode()) for s in client.secrets):
            raise OAuthError(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                f"is the client secret value, not the client secret ID, for a secret added "
                f"to app '{client.client_id}'.",
                status=401,
            )
        return client, "1"
    raise OAuthError(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
        status=401,
    )


def check_client_assertion(
    request: TokenRequest, client: App, assertion: str, minter: TokenMinter
) -> None:
    def refuse(why: str) -> OAuthError:
        return OAuthError(
            "invalid_client", 700027, f"Client assertion failed validation: {why}.", status=401
        )

    if request.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise OAuthError(
            "invalid_request",
            50027,
            "The client_assertion_type must be "
            f"'{CLIENT_ASSERTION_TYPE}' when a client_assertion is sent.",
        )
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise refuse("the assertion is too large")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        raise refuse("the assertion is not a well-formed JWT") from None
    alg = header.get("alg")
    if alg not in ("RS256", "PS256"):
        raise refuse("the signing algorithm must be RS256 or PS256")
    # MSAL sends these padded ("=") although JOSE says unpadded; Entra takes both.
    x5t, x5t256 = (
        value.rstrip("=") if isinstance(value, str) else None
        for value in (header.get("x5t"), header.get("x5t#S256"))
    )
    cert = None
    for candidate in client.certificates:
        if (x5t256 and _b64(candidate.thumbprint_sha256) == x5t256) or (
            x5t and _b64(candidate.thumbprint_sha1) == x5t
        ):
            cert = candidate
            break
    if cert is None:
        raise refuse("no certificate registered for the app has the thumbprint in x5t")
    try:
        claims = jwt.decode(
            assertion,
            cert.certificate.public_key(),  # type: ignore[arg-type]
            algorithms=[alg],
            audience=[request.token_url, minter.issuer(client.tenant_id, 2)],
            options={
                "require": ["exp", "aud", "iss", "sub"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAudienceError:
        raise refuse("the audience must be the token endpoint") from None
    except jwt.InvalidTokenError:
        raise refuse("the signature or claims are invalid") from None
    now = minter.clock()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not is_number(exp) or exp < now - 60:
        raise refuse("the assertion has expired")
    if not is_number(nbf) or nbf > now + 300:
        raise refuse("the assertion is not yet valid")
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise refuse("iss and sub must be the client id")
    now_cert = x509.load_pem_x509_certificate(cert.certificate_pem)
    if now_cert.not_valid_after_utc.timestamp() < now:
        raise refuse("the certificate has expired")


def check_federated_assertion(
    federation: Federation, request: TokenRequest, client: App, assertion: str
) -> None:
    """A client assertion from a federated issuer (see `_federation.py`)."""
    if request.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise OAuthError(
            "invalid_request",
            50027,
            f"The client_assertion_type must be '{CLIENT_ASSERTION_TYPE}'.",
        )
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise OAuthError("invalid_client", 50027, "JWT token is invalid or malformed.")
    try:
        federation.check(client, assertion)
    except FederationRefusal as refusal:
        raise OAuthError(
            refusal.error, refusal.code, refusal.description, status=refusal.status
        ) from None


def is_number(value: object) -> TypeGuard[float]:
    # MSAL writes float timestamps in client assertions; JSON booleans are not times.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
