"""The `grpc-obo` command: the dev authority and token tools for shells, scripts, grpcurl and curl.

    grpc-obo authority   run the dev authority; write its JSON document and per-app .env files
    grpc-obo token       get an access token for a user (dev authority, or any tenant: device code)
    grpc-obo decode      show a token's header and claims, UNVERIFIED, times as dates
    grpc-obo validate    verify a token as an API would: the Identity, or the refusal and its class

Exit codes, every verb: 0 done; 1 refused (a token `validate` refuses, a sign-in or token request
the authority refuses, a failed self-check); 2 usage (bad arguments); 3 bad input or
configuration (an unreadable or wrong file, a world file error, not a JWT, inconsistent options);
4 unavailable (the authority or its keys unreachable, no sign-in before --timeout); 130
interrupted. Nothing prints a secret, password or token unless asked: `token` prints the token it
was asked for, `authority` prints secrets only with --print-secrets (its --write-env and
--write-dotenv files hold them, mode 0600). `make demo` is the demo (examples are not installed).

Heavy imports (grpc, MSAL, the dev authority) happen inside the verbs: `decode` starts fast.
What a token says never drives the terminal: `decode`, `validate` and every error line show
control characters (C0, DEL, C1, line and paragraph separators, bidi controls) escaped
(`_terminal_safe`); --json output is escaped by JSON itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import datetime
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import textwrap
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    import requests

    import grpc_obo
    from grpc_obo.devauthority import DevAuthority

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = """exit codes:
  0  done
  1  refused: by the authority (sign-in, token request), by the validator, or a failed check
  2  usage: bad arguments
  3  bad input or configuration: a file, a world file, a token that is not a JWT, options
  4  unavailable: the authority or its signing keys unreachable, or --timeout passed
  130  interrupted
"""

_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.windows.net",
    }
)
_ROPC_WARNING = "This API has been deprecated for public client flows"


class CliError(Exception):
    """A failure the command reports in one line and an exit code (never a traceback)."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


# -- small helpers ---------------------------------------------------------------------------


# C0, DEL, C1 (CSI, OSC, NEL... as single code points), Unicode line/paragraph separators and
# the bidi controls: what could move the cursor, retitle a window or forge a line.
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _terminal_safe(text: str) -> str:
    """`text` with every control character shown as an escape (for human output)."""
    return _TERMINAL_UNSAFE.sub(_escape_control, text)


def _say(text: str = "", *, file: TextIO | None = None) -> None:
    """Print one line of human output, terminal-safe."""
    print(_terminal_safe(text), file=file if file is not None else sys.stdout)


def _write_private(path: Path, text: str) -> None:
    """Write `text` atomically, readable by the owner only: these files hold secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "grpc-obo" / "authority"


def _read_token(value: str | None) -> str:
    """The token from the argument, or from stdin for `-` or none (keeps it out of `ps`)."""
    text = sys.stdin.read() if value in (None, "-") else value
    assert text is not None
    token = text.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise CliError("no token given (pass it as an argument, or on stdin)")
    return token


def _load_dev_document(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError:
        raise CliError(
            f"{path}: is not the JSON document `grpc-obo authority --write-env` writes"
        ) from None
    if not isinstance(document, dict) or not all(
        k in document for k in ("authority_host", "ca_file", "apps", "users")
    ):
        raise CliError(f"{path}: is not the JSON document `grpc-obo authority --write-env` writes")
    return document


def _dev_app(document: Mapping[str, Any], name: str | None, *, public: bool) -> dict[str, Any]:
    apps: Mapping[str, dict[str, Any]] = document["apps"]
    if name is None:
        candidates = [a for a in apps.values() if bool(a.get("public_client")) == public]
        if len(candidates) != 1:
            kind = "public client" if public else "app"
            names = ", ".join(n for n, a in apps.items() if a in candidates) or "none"
            raise CliError(f"name the {kind} to use with --client (candidates: {names})")
        return candidates[0]
    for app_name, app in apps.items():
        if name.lower() in (app_name.lower(), str(app.get("client_id", "")).lower()):
            return app
    raise CliError(f"no app {name!r} in the dev authority's document ({', '.join(apps)})")


def _dev_user(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    users: Mapping[str, dict[str, Any]] = document["users"]
    key = name.lower()
    found = [
        u
        for short, u in users.items()
        if key in (short.lower(), str(u.get("username", "")).lower(), str(u.get("oid", "")))
    ]
    if len(found) != 1:
        raise CliError(f"no user {name!r} in the dev authority's document ({', '.join(users)})")
    return found[0]


def _expand_scope(document: Mapping[str, Any] | None, scope: str) -> str:
    """`orders/Orders.Read` -> `api://<orders' id>/Orders.Read` when `orders` is a dev app."""
    if document is None or "://" in scope or scope.count("/") != 1:
        return scope
    app_name, name = scope.split("/")
    app = document["apps"].get(app_name)
    if app is None or not app.get("app_id_uri"):
        return scope
    return f"{app['app_id_uri']}/{name}"


def _with_scheme(host: str) -> str:
    host = host.strip().rstrip("/")
    return host if "://" in host else f"https://{host}"


def _when(epoch: float, now: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    delta = epoch - now
    span = abs(delta)
    if span < 90:
        amount = f"{int(span)} s"
    elif span < 90 * 60:
        amount = f"{round(span / 60)} min"
    elif span < 48 * 3600:
        amount = f"{span / 3600:.1f} h"
    else:
        amount = f"{span / 86400:.1f} days"
    relative = f"in {amount}" if delta >= 0 else f"{amount} ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative})"


def _print_steps(steps: Sequence[Any], stream: TextIO) -> None:
    for step in steps:
        mark = "ok  " if step.ok else "FAIL"
        print(f"[{mark}] {step.name}: {step.detail}", file=stream)


# -- authority ---------------------------------------------------------------------------------


def _dotenv(env: Mapping[str, str], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, value in env.items():
        # Quote only what needs it, POSIX-shell style (`set -a; . file` and compose read it).
        safe = re.fullmatch(r"[A-Za-z0-9_./:,@+=~%-]*", value) is not None
        lines.append(f"{name}={value if safe else shlex.quote(value)}")
    return "\n".join(lines) + "\n"


async def _authority(args: argparse.Namespace) -> int:
    from grpc_obo.devauthority import DevAuthority, StateDirError, WorldFileError, load_world

    try:
        world = load_world(args.world) if args.world else None
    except WorldFileError as exc:
        raise CliError(str(exc)) from None
    if args.check and world is not None:
        missing = [
            n for n in ("client", "original", "downstream", "daemon") if not world.find_app(n)
        ]
        if missing:
            raise CliError(
                "--check signs in through the demo world's apps; this world lacks: "
                + ", ".join(missing)
            )
    state_dir = Path(args.state_dir)
    authority = DevAuthority(
        world=world, port=args.port, token_lifetime=args.token_lifetime, state_dir=state_dir
    )
    try:
        await authority.start()
    except StateDirError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve on 127.0.0.1:{args.port} ({exc.strerror})") from None
    try:
        return await _serve(authority, args, state_dir)
    finally:
        await authority.stop()


async def _serve(authority: DevAuthority, args: argparse.Namespace, state_dir: Path) -> int:
    from grpc_obo.devauthority._selfcheck import run_self_check
    from grpc_obo.devauthority._workload import workload_dotenv

    if args.check:
        steps = await asyncio.to_thread(run_self_check, authority)
        _print_steps(steps, stream=sys.stderr)
        if not all(step.ok for step in steps):
            return EXIT_REFUSED
    files: dict[str, Any] = {"state_dir": str(state_dir)}
    if args.server_cert:
        try:
            issued = authority.issue_server_certificate(Path(args.server_cert))
        except OSError as exc:
            raise CliError(f"--server-cert {args.server_cert}: {exc.strerror}") from None
        files["server_certificate"] = {
            "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file),  # the path only, never the key
            "ca_file": str(issued.ca_file),
            "hosts": list(issued.hosts),
            "not_valid_after": issued.not_valid_after.isoformat(),
        }
    if args.write_dotenv:
        directory = Path(args.write_dotenv)
        env_files, tokens = {}, {}
        for app in authority.world.apps:
            path = directory / f"{app.name}.env"
            header = (
                f"grpc-obo dev authority at {authority.base_url}: app {app.name!r}.\n"
                "For ConfidentialClient.from_env() and ValidatorOptions.from_env(); "
                "holds secrets (0600)."
            )
            env = authority.azure_env(app.name)
            pod = workload_dotenv(authority.workloads, app, directory, env)
            if pod is not None:  # a federated service account: a token file, no secret
                header = header.replace("holds secrets (0600).", "workload identity: no secret.")
                env = pod
                tokens[app.name] = pod["AZURE_FEDERATED_TOKEN_FILE"]
            _write_private(path, _dotenv(env, header))
            env_files[app.name] = str(path)
        files["env_files"] = env_files
        if tokens:  # projected service-account token files, rotated while it serves
            files["workload_tokens"] = tokens
    if args.write_env:
        document = {**authority.summary(include_secrets=True), **files}
        _write_private(Path(args.write_env), json.dumps(document, indent=2) + "\n")
        files["env"] = str(args.write_env)
    shown = {**authority.summary(include_secrets=args.print_secrets), **files}
    print(json.dumps(shown, indent=2), flush=True)
    print(f"dev authority serving at {authority.authority_url} (Ctrl-C stops)", file=sys.stderr)
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.serve_seconds is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.serve_seconds)
    else:
        await stop.wait()
    return EXIT_OK


# -- token --------------------------------------------------------------------------------------


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


def _token(args: argparse.Namespace) -> int:
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
        host, ca_file = _with_scheme(args.authority_host), args.ca_file
    authority_url = f"{_with_scheme(host)}/{tenant}"
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
    print(flow.get("message") or flow["user_code"], file=sys.stderr, flush=True)
    flow["expires_at"] = min(float(flow.get("expires_at", 0)), time.time() + timeout)
    result: dict[str, Any] = app.acquire_token_by_device_flow(flow)
    return result


# -- decode --------------------------------------------------------------------------------------

_TIME_CLAIMS = ("exp", "nbf", "iat", "auth_time")


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CliError(f"not a JWT: its {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise CliError(f"not a JWT: its {what} is not a JSON object")
    return value


def _decode_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    parts = token.split(".")
    if len(parts) == 5:
        raise CliError("an encrypted token (JWE): nothing to show without its key")
    if len(parts) != 3:
        raise CliError(f"not a JWT: {len(parts)} dot-separated parts, a JWS has 3")
    header = _b64json(parts[0], "header")
    claims = _b64json(parts[1], "payload")
    return header, claims, len(parts[2]) * 3 // 4


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decode(args: argparse.Namespace) -> int:
    header, claims, signature_bytes = _decode_parts(_read_token(args.token))
    now = time.time()
    dates = {
        name: datetime.datetime.fromtimestamp(claims[name], datetime.UTC).isoformat()
        for name in _TIME_CLAIMS
        if isinstance(claims.get(name), (int, float)) and not isinstance(claims[name], bool)
    }
    if args.json:
        document = {"verified": False, "header": header, "claims": claims, "dates": dates}
        print(json.dumps(document, indent=2))
        return EXIT_OK
    _say("UNVERIFIED: the signature was not checked; anyone can write these claims.")
    _say("            (`grpc-obo validate` verifies a token as an API does.)")
    # Names are escaped before measuring: the columns line up as shown.
    shown_header = {_terminal_safe(k): _shown(v) for k, v in header.items()}
    shown_claims = {
        _terminal_safe(k): f"{_when(float(v), now)}  [{v}]" if k in dates else _shown(v)
        for k, v in claims.items()
    }
    width = max(len(k) for k in (*shown_header, *shown_claims, "signature"))
    _say("header:")
    for name, text in shown_header.items():
        _say(f"  {name:<{width}}  {text}")
    _say("claims:")
    for name, text in shown_claims.items():
        _say(f"  {name:<{width}}  {text}")
    _say(f"  {'signature':<{width}}  ({signature_bytes} bytes, not shown)")
    if "exp" in dates:
        state = "expired" if float(claims["exp"]) < now else "not expired"
        _say(f"{state} by this machine's clock")
    return EXIT_OK


# -- validate ------------------------------------------------------------------------------------


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


def _validate(args: argparse.Namespace) -> int:
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="grpc-obo",
        description="grpc_obo tools: a local Entra-compatible authority and token helpers.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    authority = commands.add_parser(
        "authority",
        help="run the dev authority (HTTPS on 127.0.0.1)",
        description=_wrap(
            "Run the dev authority on 127.0.0.1 over HTTPS until Ctrl-C / SIGTERM. Prints a JSON "
            "description (URLs, tenant, CA file, apps, users; secrets and passwords masked unless "
            "--print-secrets) on stdout."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    authority.add_argument(
        "--world",
        metavar="FILE",
        help="world file (TOML or JSON) of tenants, apps and users; default: the demo world",
    )
    authority.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    authority.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the CA (ca.pem, reused across restarts) and client certificates live "
        "(default $XDG_STATE_HOME/grpc-obo/authority, else ~/.local/state/grpc-obo/authority)",
    )
    authority.add_argument(
        "--write-env",
        metavar="FILE",
        help="write the JSON description with secrets and passwords to FILE (mode 0600); "
        "`grpc-obo token/validate --dev-authority FILE` read it",
    )
    authority.add_argument(
        "--write-dotenv",
        metavar="DIR",
        help="write DIR/<app>.env per app (mode 0600) with azure-identity's variable names "
        "(AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST, ...) and "
        "GRPC_OBO_CA_FILE, GRPC_OBO_AUDIENCES, ...: ConfidentialClient.from_env() and "
        "ValidatorOptions.from_env() work from it. An app with a federated credential on a dev "
        "workload issuer ({authority_host}/workload/<cluster>, subject "
        "system:serviceaccount:<ns>:<name>) gets the pod's workload identity instead: "
        "DIR/<app>.token (a service-account token, rotated while the authority runs) as "
        "AZURE_FEDERATED_TOKEN_FILE, and no secret",
    )
    authority.add_argument(
        "--server-cert",
        metavar="DIR",
        help="also write DIR/server.pem and DIR/server-key.pem (0600): a TLS server certificate "
        "for 127.0.0.1, localhost and ::1 signed by the authority's CA, valid 24 hours, for your "
        "own servers (clients trust the CA file)",
    )
    authority.add_argument(
        "--print-secrets",
        action="store_true",
        help="show client secrets and user passwords in the JSON printed on stdout",
    )
    authority.add_argument(
        "--token-lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of the access tokens it issues (default 3600)",
    )
    authority.add_argument(
        "--check",
        action="store_true",
        help="first sign in, exchange and get an app token with MSAL (demo world); exit 1 on "
        "failure",
    )
    authority.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C or SIGTERM)",
    )

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

    decode = commands.add_parser(
        "decode",
        help="show a token's header and claims (UNVERIFIED)",
        description=_wrap(
            "Show a JWT's header and claims, clearly marked UNVERIFIED, with exp/nbf/iat/"
            "auth_time as dates. The signature is neither checked nor printed."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    decode.add_argument(
        "token", nargs="?", metavar="TOKEN", help="the token; '-' or none reads it from stdin"
    )
    decode.add_argument(
        "--json", action="store_true", help="print header, claims and dates as JSON"
    )

    validate = commands.add_parser(
        "validate",
        help="verify a token as an API would",
        description=_wrap(
            "Verify a token with grpc_obo's TokenValidator (signature from the authority's keys, "
            "issuer, audience, times, version) and print the resulting Identity, or the refusal: "
            "its class, reason and the gRPC status an API would answer. Exit 0 accepted, 1 "
            "refused, 4 keys unavailable. Configure with --dev-authority FILE --api NAME, or "
            "--from-env (ValidatorOptions.from_env()), or --tenant and --audience; flags win."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    validate.add_argument(
        "token", nargs="?", metavar="TOKEN", help="the token; '-' or none reads it from stdin"
    )
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
    validate.add_argument(
        "--json", action="store_true", help="print the identity or the refusal as JSON"
    )
    return parser


def _wrap(text: str) -> str:
    # RawDescriptionHelpFormatter keeps the exit-code table's lines; paragraphs are wrapped here.
    return textwrap.fill(text, width=88)


def _variable_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a shell variable name")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "authority":
            # Absolute paths throughout: the files are read by processes started anywhere.
            args.state_dir = args.state_dir or str(_default_state_dir())
            for name in ("state_dir", "write_env", "write_dotenv"):
                if getattr(args, name):
                    setattr(args, name, os.path.abspath(getattr(args, name)))
            return asyncio.run(_authority(args))
        if args.command == "token":
            return _token(args)
        if args.command == "decode":
            return _decode(args)
        return _validate(args)
    except CliError as exc:
        _say(f"grpc-obo {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ValueError as exc:  # ConfigurationError and friends: messages hold no secrets
        _say(f"grpc-obo {args.command}: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
