"""The On-Behalf-Of grant (jwt-bearer with `requested_token_use=on_behalf_of`): a confidential
middle tier presents the user's access token for it (the assertion) and gets one for a
downstream API, as Entra decides it: the assertion's issuer, audience and lifetime, the user
and the revocation of their sessions, consent, conditional access and authentication context
(met by the user's sign-in, never by the middle tier), and claims a downstream challenge asks for.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jwt

from grpc_obo.devauthority._client_auth import MAX_ASSERTION_BYTES, is_number
from grpc_obo.devauthority._faults import RequestInfo
from grpc_obo.devauthority._grants._claims import capabilities, requested_acrs, string_claims
from grpc_obo.devauthority._grants._request import TokenRequest
from grpc_obo.devauthority._grants._shared import GrantContext, GrantHandler, mfa_required
from grpc_obo.devauthority._graph import cae_claims
from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import App


def _about(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    try:
        claims = jwt.decode(request.get("assertion") or "", options={"verify_signature": False})
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None, None
    oid = claims.get("oid")
    return (oid if isinstance(oid, str) else None), None


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    if request.get("requested_token_use") != "on_behalf_of":
        raise OAuthError(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: "
            "'requested_token_use' with the value 'on_behalf_of'.",
        )
    if client.public_client:
        raise OAuthError(
            "invalid_client",
            7000218,
            "The On-Behalf-Of flow needs a confidential client: the request body must "
            "contain 'client_assertion' or 'client_secret'.",
            status=401,
        )
    assertion = request.require("assertion")
    scopes = context.parse_scopes(request.get("scope"))
    requested_claims = request.get("claims")
    capabilities(requested_claims)  # malformed claims are refused before any decision
    claims = _read_assertion(context, assertion, client)
    oid, tid = claims.get("oid"), claims.get("tid")
    if not isinstance(claims.get("scp"), str) or claims.get("idtyp") == "app":
        raise OAuthError(
            "invalid_grant",
            50013,
            "Assertion failed validation: an On-Behalf-Of assertion must be a delegated "
            "(user) access token, not an app-only token.",
        )
    user = context.world.find_user(oid) if isinstance(oid, str) else None
    if user is None or user.tenant_id != tid:
        raise OAuthError(
            "invalid_grant",
            50034,
            f"The user account {oid if isinstance(oid, str) else '(none)'} does not exist "
            f"in the {tid if isinstance(tid, str) else 'given'} directory.",
        )
    user = context.user_in(user, tenant, user.oid, client)
    revoked = user.tokens_valid_from
    if revoked and not (is_number(claims.get("iat")) and claims["iat"] >= revoked):
        # Entra refuses a grant issued before the user's sessions were revoked with
        # AADSTS50173 (invalid_grant) and the claims a new sign-in must carry.
        raise OAuthError(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is "
            "needed. The user might have changed or reset their password. The grant was "
            f"issued on '{_iso(claims.get('iat'))}' and the TokensValidFrom date (before "
            f"which tokens are not valid) for this user is '{_iso(revoked)}'.",
            claims=cae_claims(revoked),
        )
    granted = context.delegated_grant(client, scopes)
    amr = tuple(a for a in claims.get("amr", ()) if isinstance(a, str)) or ("pwd",)
    resource_id = scopes.resource.client_id
    challenge = context.faults.challenge_for(
        RequestInfo(endpoint="token", user_oid=user.oid, username=user.username), resource_id
    )
    if challenge is None and requested_claims is not None:
        # The middle tier asks for a token meeting a challenge (say, one a downstream API
        # relayed): Entra issues it only if the user's sign-in already did.
        challenge = context.requested_challenge(user, requested_claims)
    acrs = string_claims(claims.get("acrs"))
    wanted_acrs = requested_acrs(requested_claims)
    missing_acrs = sorted(wanted_acrs - set(acrs))
    if missing_acrs:
        # An authentication context (step-up) is met by the user's sign-in, never by the
        # middle tier: the assertion must carry it already.
        wanted: dict[str, Any] = {"essential": True}
        if len(missing_acrs) == 1:
            wanted["value"] = missing_acrs[0]
        else:
            wanted["values"] = missing_acrs
        raise OAuthError(
            "interaction_required",
            50076,
            "The user's sign-in does not satisfy the authentication context "
            f"'{','.join(missing_acrs)}' required to access '{resource_id}'. Sign in "
            "again with the claims.",
            suberror="basic_action",
            claims=json.dumps({"access_token": {"acrs": wanted}}, separators=(",", ":")),
        )
    if challenge is not None and "mfa" not in amr:
        raise mfa_required(challenge, resource_id, "interaction_required")
    return context.user_tokens(
        request, user, client, client_auth, scopes, granted, amr, id_token=False, acrs=acrs
    )


def _read_assertion(context: GrantContext, assertion: str, client: App) -> dict[str, Any]:
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise OAuthError("invalid_grant", 50027, "JWT token is invalid or malformed.")
    try:
        claims = context.minter.read_own(assertion)
    except jwt.ExpiredSignatureError:
        raise OAuthError(
            "invalid_grant",
            500133,
            "Assertion is not within its valid time range. Ensure that the access token "
            "is not expired before using it for user assertion, or request a new token.",
        ) from None
    except jwt.ImmatureSignatureError:
        raise OAuthError(
            "invalid_grant", 500133, "Assertion is not within its valid time range."
        ) from None
    except jwt.InvalidSignatureError:
        raise OAuthError(
            "invalid_grant",
            50013,
            "Assertion failed signature validation. [Reason - The key was not found.]",
        ) from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise OAuthError("invalid_grant", 50027, "JWT token is invalid or malformed.") from None
    tid = claims.get("tid")
    expected_issuers = (
        {context.minter.issuer(tid, 2), context.minter.issuer(tid, 1)}
        if isinstance(tid, str)
        else set()
    )
    if claims.get("iss") not in expected_issuers:
        raise OAuthError(
            "invalid_grant", 50013, "Assertion failed validation: the issuer is not valid."
        )
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud not in client.identifiers():
        raise OAuthError(
            "invalid_grant",
            50013,
            "Assertion audience does not match the Client app presenting the assertion. "
            f"The audience in the assertion was '{str(aud)[:100]}' and the expected audience "
            f"is '{client.client_id}' or one of the Application Id URIs of this "
            "application.",
        )
    return claims


def _iso(value: object) -> str:
    if not is_number(value):
        return "unknown"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


HANDLER = GrantHandler(_about, _redeem)
