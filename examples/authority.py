"""`python -m examples.authority`: the dev authority, with the examples' world, as a process.

Like `grpc-obo authority`, it serves on 127.0.0.1 over HTTPS and writes (mode 0600) the JSON
document the examples read (`--write-env`), but its world also has the KeyVault registration, the
consents the three-hop chain needs, and dave's MFA policy (examples/world.py). It also issues
each example API a TLS server certificate for 127.0.0.1, localhost and ::1, signed by its CA
(`DevAuthority.issue_server_certificate`): `<api>.pem` and `<api>-key.pem` (0600) in
`--server-certs DIR`, by default a private temporary directory removed when it stops. The
document lists them under `server_certificates` (paths only), and `examples.settings` turns them
into each API's TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE. In the same directory, each middle
tier's projected service-account token from the dev workload issuer (`<app>.token`, rotated
while it runs; `workload_tokens` in the document), which `examples.settings` hands the middle
tier as AZURE_FEDERATED_TOKEN_FILE: no middle tier gets a secret or a private key.

Stdin is its control line, for the demo and the end-to-end tests (one JSON object per line, one
JSON answer per line on stdout; the first stdout line says it is ready):

    {"op": "count", "grant": "obo", "user": "alice", "client": "original"}   token requests logged
    {"op": "consent", "client": "downstream", "resource": "vault", "grant": false}  revoke (all,
        or "scopes": [...]); with "grant": true and "scopes", an administrator's consent
    {"op": "fail", "status": 503, "times": 1, "grant": "obo", "user": "bob"}    fault injection
    {"op": "reset"}                     faults, log and consents as at start

It stops on SIGTERM, SIGINT or when stdin closes (so it never outlives the process that started
it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from examples.settings import REGISTRATIONS
from examples.world import (
    UNFEDERATED_SUBJECT,
    WORKLOAD_CLUSTER,
    WORKLOAD_SUBJECTS,
    apply_policies,
    example_world,
)
from grpc_obo.devauthority import DevAuthority


def _write_private(path: Path, text: str) -> None:
    # The document holds dev secrets and passwords: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class Control:
    """Answers the control line's commands against a running authority."""

    def __init__(self, authority: DevAuthority) -> None:
        self.authority = authority
        self._consents = {
            app.name: (dict(app.api_permissions), dict(app.pre_authorized))
            for app in authority.world.apps
        }

    def _client_id(self, name: str | None) -> str | None:
        return self.authority.world.app(name).client_id if name else None

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        authority = self.authority
        if op == "count":
            count = authority.requests.count(
                grant=command.get("grant"),
                user=command.get("user"),
                client_id=self._client_id(command.get("client")),
                ok=command.get("ok"),
            )
            return {"ok": True, "count": count}
        if op == "consent":
            world, scopes = authority.world, command.get("scopes") or None
            if command.get("grant"):
                world.grant_consent(command["client"], command["resource"], scopes)
            else:
                world.revoke_consent(command["client"], command["resource"], scopes)
            return {"ok": True}
        if op == "fail":
            authority.faults.fail(
                int(command.get("status", 503)),
                times=command.get("times", 1),
                grant=command.get("grant"),
                user=command.get("user"),
                client_id=self._client_id(command.get("client")),
            )
            return {"ok": True}
        if op == "reset":
            authority.faults.clear()
            authority.requests.clear()
            apply_policies(authority)
            for app in authority.world.apps:
                app.api_permissions, app.pre_authorized = map(dict, self._consents[app.name])
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


def _read_control(control: Control, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The control line, read in a daemon thread (a blocked read must not hold up the exit);
    each command runs on the authority's event loop."""

    def answer(line: str) -> None:
        try:
            reply = control.handle(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)

    # NOTE: os.read, not sys.stdin: a daemon thread blocked inside the buffered reader holds
    # its lock, and the interpreter aborts when it finds it taken at exit.
    pending = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(0, 4096):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.strip():
                    loop.call_soon_threadsafe(answer, line.decode(errors="replace"))
    with contextlib.suppress(RuntimeError):  # the loop already closed
        loop.call_soon_threadsafe(stop.set)  # our parent closed stdin, or went away


def _server_certificates(authority: DevAuthority, directory: Path) -> dict[str, dict[str, str]]:
    """One certificate per example API, named after it; the document gets the paths only."""
    issued = {}
    for service in REGISTRATIONS:
        found = authority.issue_server_certificate(directory, name=service)
        issued[service] = {
            "cert_file": str(found.cert_file),
            "key_file": str(found.key_file),
            "ca_file": str(found.ca_file),
        }
    return issued


def _workload_tokens(authority: DevAuthority, directory: Path) -> dict[str, str]:
    """Each middle tier's projected service-account token file (the dev workload issuer rotates
    it while the authority runs), and one for a service account nobody federated."""
    files = {}
    subjects = {**WORKLOAD_SUBJECTS, "intruder": UNFEDERATED_SUBJECT}
    for app, subject in subjects.items():
        token = authority.workloads.project(
            directory / f"{app}.token", subject, cluster=WORKLOAD_CLUSTER
        )
        files[app] = str(token.path)
    return files


async def _run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:
        certs = args.server_certs or cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="grpc-obo-example-tls-")
        )
        return await _serve(args, Path(certs))


async def _serve(args: argparse.Namespace, certs: Path) -> int:
    authority = DevAuthority(world=example_world(), port=args.port, state_dir=args.state_dir)
    async with authority:
        apply_policies(authority)
        summary = authority.summary(include_secrets=True)
        summary["server_certificates"] = _server_certificates(authority, certs)
        summary["workload_tokens"] = _workload_tokens(authority, certs)
        document = json.dumps(summary, indent=2)
        _write_private(Path(args.write_env), document + "\n")
        print(
            json.dumps(
                {"ready": True, "authority": authority.authority_url, "env": args.write_env}
            ),
            flush=True,
        )
        print(f"dev authority serving at {authority.authority_url}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        threading.Thread(
            target=_read_control, args=(Control(authority), loop, stop), daemon=True
        ).start()
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.authority", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one)")
    parser.add_argument("--write-env", required=True, metavar="PATH", help="the JSON document")
    parser.add_argument("--state-dir", metavar="DIR", help="where to write the CA and keys")
    parser.add_argument(
        "--server-certs",
        metavar="DIR",
        help="where to write each API's TLS certificate and key (default: a temporary directory "
        "removed at exit)",
    )
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
