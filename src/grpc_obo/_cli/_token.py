"""`grpc-obo token`: an access token for a user (the dev authority: a password sign-in; any
tenant: the device code flow)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

from grpc_obo._common import with_scheme

from ._common import (
    _MICROSOFT_HOSTS,
    _ROPC_WARNING,
    EXIT_CODES,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CliError,
    _dev_app,
    _dev_user,
    _expand_scope,
    _load_dev_document,
    _say,
    _variable_name,
    _wrap,
)


def _http_client(ca_file: str | None, authority_url: str, *, dev: bool) -> requests.Session:
    import requests

    from grpc_obo.devauthority import msal_http_client

    if ca_file is None:
        return requests.Session()
    if not Path(ca_file).is_file():
        raise CliError(f"CA file {ca_file!r} does not exist")
    if dev:
        parts = urllib.parse.urlsplit(authority_url)
        return msal_http_client(ca_file, host=parts.hostname, port=parts.port)
    return msal_http_client(ca_file)


def run(args: argparse.Namespace) -> int:
    import msal
    import requests

    document = _load_dev_document(args.dev_authority) if args.dev_authority else None
    scopes = [_expand_scope(document, s) for s in args.scope]
    if document is not None:
        client = _dev_app(document, args.client, public=True)
        client_id = str(client["client_id"])
        user = _dev_user(document, args.user) if args.user else None
        tenant = args.tenant or (user["tenant_id"] if user else document["tenant_id"])
        host, ca_file = document["authority_host"], args.ca_file or document["ca_file"]
        if user is None and not args.device_code:
            raise CliError("name the user to sign in with --user (or use --device-code)")
    else:
        if not (args.tenant and args.client_id):
            raise CliError(
                "give --dev-authority FILE, or --tenant and --client-id (a public client app) "
                "for a device code sign-in"
            )
        client_id, tenant, user = args.client_id, args.tenant, None
        host, ca_file = with_scheme(args.authority_host), args.ca_file
    authority_url = f"{with_scheme(host)}/{tenant}"
    hostname = urllib.parse.urlsplit(authority_url).hostname or ""
    http = _http_client(ca_file, authority_url, dev=document is not None)
    try:
        app = msal.PublicClientApplication(
            client_id,
            authority=authority_url,
            instance_discovery=hostname in _MICROSOFT_HOSTS,
            http_client=http,
            timeout=args.http_timeout,
        )
        if user is not None and not args.device_code:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", _ROPC_WARNING, DeprecationWarning)
                result = app.acquire_token_by_username_password(
                    user["username"], user["password"], scopes=scopes
                )
        else:
            result = _device_code(app, scopes, args.timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise CliError(
            f"{authority_url}: unreachable ({type(exc).__name__})", EXIT_UNAVAILABLE
        ) from None
    except ValueError as exc:  # MSAL's answer to an authority or scope it cannot use
        raise CliError(f"MSAL refused the request: {exc}") from None
    finally:
        http.close()
    if "access_token" not in result:
        error = str(result.get("error") or "no token")
        codes = ",".join(f"AADSTS{c}" for c in result.get("error_codes") or ())
        description = str(result.get("error_description") or "").split(" Trace ID:")[0]
        description = re.sub(r"^AADSTS\d+: ", "", description)[:300]
        if error == "authorization_pending":
            raise CliError("no sign-in before --timeout", EXIT_UNAVAILABLE)
        raise CliError(f"the authority refused: {error} {codes}: {description}", EXIT_REFUSED)
    token = str(result["access_token"])
    if args.json:
        expires_in = int(result.get("expires_in", 0))
        print(
            json.dumps(
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                    "expires_on": int(time.time()) + expires_in,
                    "scope": result.get("scope", " ".join(scopes)),
                },
                indent=2,
            )
        )
    elif args.env:
        print(f"export {args.env}={shlex.quote(token)}")
    else:
        print(token)
    return EXIT_OK


def _device_code(app: Any, scopes: list[str], timeout: float) -> dict[str, Any]:
    flow: dict[str, Any] = app.initiate_device_flow(scopes=scopes)
    if "user_code" not in flow:
        return flow  # the authority's error, reported by the caller
    # The authority's words: shown terminal-safe like everything a server says.
    _say(flow.get("message") or flow["user_code"], file=sys.stderr)
    flow["expires_at"] = min(float(flow.get("expires_at", 0)), time.time() + timeout)
    result: dict[str, Any] = app.acquire_token_by_device_flow(flow)
    return result


# -- decode --------------------------------------------------------------------------------------


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
) -> None:
    token = commands.add_parser(
        "token",
        help="get an access token for a user and scope",
        description=_wrap(
            "Get an access token for a user and print it (or --env / --json). Against the dev "
            "authority (--dev-authority FILE from `authority --write-env`): signs the user in "
            "with the password from FILE, or through the device code sign-in page with "
            "--device-code. Against any tenant (--tenant, --client-id of a public client app): "
            "the device code flow; the sign-in instructions go to stderr. The token is printed "
            "because you asked for it: treat the output as a secret."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    token.add_argument(
        "--dev-authority",
        metavar="FILE",
        help="the JSON file `grpc-obo authority --write-env FILE` wrote",
    )
    token.add_argument(
        "--user", help="dev authority: the user (name before the @, full username or oid)"
    )
    token.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="a scope to ask for (repeat for several of one API), e.g. api://<id>/access_as_user; "
        "with --dev-authority also APP/SCOPE (orders/Orders.Read)",
    )
    token.add_argument(
        "--client",
        metavar="NAME",
        help="dev authority: the public client app to sign in through (default: the only one)",
    )
    token.add_argument(
        "--device-code",
        action="store_true",
        help="dev authority: sign in on its page (device code flow) instead of by password",
    )
    token.add_argument(
        "--tenant", help="tenant GUID or domain (default with a dev file: the user's)"
    )
    token.add_argument("--client-id", help="a public client app's client id (device code flow)")
    token.add_argument(
        "--authority-host",
        default="login.microsoftonline.com",
        metavar="HOST",
        help="the authority host; a bare host means https (default login.microsoftonline.com)",
    )
    token.add_argument(
        "--ca-file", metavar="FILE", help="trust exactly this CA for the authority's HTTPS"
    )
    token.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for a device code sign-in (default 300); exit 4 after",
    )
    token.add_argument(
        "--http-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="timeout of each request to the authority (default 10)",
    )
    output = token.add_mutually_exclusive_group()
    output.add_argument(
        "--env",
        metavar="VAR",
        type=_variable_name,
        help="print `export VAR=<token>` for eval in a shell",
    )
    output.add_argument(
        "--json",
        action="store_true",
        help="print access_token, token_type, expires_in, expires_on and scope as JSON",
    )
