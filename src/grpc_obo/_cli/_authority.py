"""`grpc-obo authority`: run the dev authority; write its JSON document and per-app .env files."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grpc_obo.devauthority import DevAuthority

from ._common import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
    _dotenv,
    _print_steps,
    _wrap,
    _write_private,
)


async def run(args: argparse.Namespace) -> int:
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


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
) -> None:
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
