"""`grpc-obo validate`: verify a token as an API would; print the Identity, or the refusal and its
class."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc_obo

from ._common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CliError,
    _dev_app,
    _load_dev_document,
    _read_token,
    _say,
    _when,
    add_token_verb,
)


def _validator_options(args: argparse.Namespace) -> grpc_obo.ValidatorOptions:
    import grpc_obo

    given: dict[str, Any] = {}
    if args.tenant:
        given["tenant"] = args.tenant
    if args.audience:
        given["audiences"] = frozenset(args.audience)
    if args.authority_host:
        given["authority_host"] = args.authority_host
    if args.v1_issuer_host:
        given["v1_issuer_host"] = args.v1_issuer_host
    if args.ca_file:
        given["ca_file"] = args.ca_file
    if args.version:
        given["versions"] = frozenset(args.version)
    if args.allowed_tenant:
        given["allowed_tenants"] = frozenset(args.allowed_tenant)
    if args.leeway is not None:
        given["leeway"] = args.leeway
    if args.from_env:
        return grpc_obo.ValidatorOptions.from_env(**given)
    if args.dev_authority:
        document = _load_dev_document(args.dev_authority)
        if not args.api:
            raise CliError("--dev-authority needs --api NAME: the API the token must be for")
        api = _dev_app(document, args.api, public=False)
        tenants = [str(t["id"]) for t in document.get("tenants", ())] or [document["tenant_id"]]
        audiences = {str(api["client_id"])}
        if api.get("app_id_uri"):
            audiences.add(str(api["app_id_uri"]))
        defaults: dict[str, Any] = {
            "authority_host": document["authority_host"],
            "v1_issuer_host": document["authority_host"],
            "ca_file": document["ca_file"],
            "audiences": frozenset(audiences),
            "versions": frozenset({f"{api.get('access_token_version', 2)}.0"}),
        }
        if len(tenants) > 1:
            defaults.update(tenant="organizations", allowed_tenants=frozenset(tenants))
        else:
            defaults["tenant"] = tenants[0]
        return grpc_obo.ValidatorOptions(**{**defaults, **given})
    if "tenant" not in given or "audiences" not in given:
        raise CliError(
            "give --tenant and --audience, or --dev-authority FILE --api NAME, or --from-env"
        )
    return grpc_obo.ValidatorOptions(**given)


def _identity_fields(identity: grpc_obo.Identity) -> dict[str, Any]:
    return {
        "kind": identity.kind.value,
        "tid": identity.tid,
        "oid": identity.oid,
        "sub": identity.sub,
        "client_id": identity.client_id,
        "scopes": sorted(identity.scopes),
        "roles": sorted(identity.roles),
        "username": identity.username,
        "name": identity.name,
        "audience": identity.audience,
        "issuer": identity.issuer,
        "token_version": identity.token_version,
        "expires_at": identity.expires_at,
        "client_capabilities": sorted(identity.client_capabilities),
    }


def run(args: argparse.Namespace) -> int:
    import grpc_obo

    token = _read_token(args.token)
    options = _validator_options(args)

    async def check() -> grpc_obo.Identity:
        async with grpc_obo.TokenValidator(options) as validator:
            return await validator.validate(token)

    try:
        identity = asyncio.run(check())
    except (grpc_obo.TokenValidationError, grpc_obo.AccessDeniedError) as exc:
        refusal = {
            "accepted": False,
            "error": type(exc).__name__,
            "reason": exc.reason,
            "claim": getattr(exc, "claim", None),
            "status": grpc_obo.status_for(exc).name,
            "message": exc.message,
        }
        if args.json:
            print(json.dumps(refusal, indent=2))
        else:
            claim = f", claim {refusal['claim']}" if refusal["claim"] else ""
            _say(f"refused ({refusal['status']}): {refusal['error']} (reason {exc.reason}{claim})")
            _say(f"  {exc.message}")
        return EXIT_REFUSED
    except grpc_obo.KeySourceUnavailableError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    now = time.time()
    fields = _identity_fields(identity)
    if args.json:
        print(json.dumps({"accepted": True, "identity": fields}, indent=2))
        return EXIT_OK
    _say(f"accepted: {identity.kind.value} {identity.principal}")
    for name, value in fields.items():
        if name == "expires_at":
            value = _when(float(value), now)
        elif isinstance(value, list):
            value = " ".join(value) or "-"
        _say(f"  {name:<19}  {'-' if value is None else value}")
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
) -> None:
    add_token_verb(
        commands,
        formatter,
        "validate",
        summary="verify a token as an API would",
        description=(
            "Verify a token with grpc_obo's TokenValidator (signature from the authority's keys, "
            "issuer, audience, times, version) and print the resulting Identity, or the refusal: "
            "its class, reason and the gRPC status an API would answer. Exit 0 accepted, 1 "
            "refused, 4 keys unavailable. Configure with --dev-authority FILE --api NAME, or "
            "--from-env (ValidatorOptions.from_env()), or --tenant and --audience; flags win."
        ),
        json_help="print the identity or the refusal as JSON",
        options=_options,
    )


def _options(validate: argparse.ArgumentParser) -> None:
    """Where the validator's settings come from: the dev authority's file, the environment,
    or flags (flags win)."""
    validate.add_argument(
        "--dev-authority", metavar="FILE", help="the JSON file `authority --write-env` wrote"
    )
    validate.add_argument("--api", metavar="NAME", help="with --dev-authority: the API's app name")
    validate.add_argument(
        "--from-env",
        action="store_true",
        help="read AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_AUTHORITY_HOST, GRPC_OBO_* as "
        "ValidatorOptions.from_env() does",
    )
    validate.add_argument(
        "--tenant", help="tenant GUID, or organizations/common with --allowed-tenant"
    )
    validate.add_argument(
        "--audience",
        action="append",
        metavar="ID",
        help="an identifier of the API (client id, App ID URI); repeat for several",
    )
    validate.add_argument(
        "--allowed-tenant",
        action="append",
        metavar="GUID",
        help="multi-tenant: a tenant whose tokens are accepted; repeat for several",
    )
    validate.add_argument(
        "--version",
        action="append",
        choices=("1.0", "2.0"),
        help="accepted token version (repeat for both; default 2.0)",
    )
    validate.add_argument(
        "--authority-host",
        metavar="HOST",
        help="where discovery and keys live (default login.microsoftonline.com)",
    )
    validate.add_argument(
        "--v1-issuer-host", metavar="HOST", help="v1 tokens' issuer host (default sts.windows.net)"
    )
    validate.add_argument(
        "--ca-file", metavar="FILE", help="trust exactly this CA for the key fetches"
    )
    validate.add_argument(
        "--leeway", type=float, metavar="SECONDS", help="clock skew tolerated (default 60)"
    )
