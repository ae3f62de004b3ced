"""The `grpc-obo` command.

- `grpc-obo authority`: run the dev authority on 127.0.0.1 and print (or `--write-env` write) what
  clients need: authority URL, tenant, CA file, apps with secrets, users with passwords.
- `grpc-obo demo`: the main job on embedded defaults (see `make demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from grpc_obo.devauthority import DevAuthority
from grpc_obo.devauthority._selfcheck import CheckStep, run_self_check


def _write_private(path: Path, text: str) -> None:
    # The file holds dev secrets and passwords: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


async def _authority(args: argparse.Namespace) -> int:
    authority = DevAuthority(
        port=args.port, token_lifetime=args.token_lifetime, state_dir=args.state_dir
    )
    async with authority:
        if args.check:
            steps = await asyncio.to_thread(run_self_check, authority)
            _print_steps(steps, stream=sys.stderr)
            if not all(step.ok for step in steps):
                return 1
        document = json.dumps(authority.summary(include_secrets=True), indent=2)
        if args.write_env:
            _write_private(Path(args.write_env), document + "\n")
        print(document, flush=True)
        print(f"dev authority serving at {authority.authority_url} (Ctrl-C stops)", file=sys.stderr)
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
    return 0


def _print_steps(steps: list[CheckStep], stream: TextIO | None = None) -> None:
    for step in steps:
        mark = "ok  " if step.ok else "FAIL"
        print(f"[{mark}] {step.name}: {step.detail}", file=stream or sys.stdout)


def _demo(_: argparse.Namespace) -> int:
    print("grpc_obo demo: dev authority self-check with unmodified MSAL (tokens are not shown)")
    with DevAuthority().running_in_thread() as authority:
        print(f"dev authority at {authority.authority_url}")
        steps = run_self_check(authority)
        _print_steps(steps)
        counts = authority.requests.by_grant()
        print(
            "token requests by grant: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        )
    return 0 if steps and all(step.ok for step in steps) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpc-obo", description="grpc_obo tools")
    commands = parser.add_subparsers(dest="command", required=True)

    authority = commands.add_parser("authority", help="run the local Entra-compatible authority")
    authority.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one)")
    authority.add_argument("--write-env", metavar="PATH", help="also write the JSON to PATH (0600)")
    authority.add_argument("--state-dir", metavar="DIR", help="where to write the CA and keys")
    authority.add_argument("--token-lifetime", type=int, default=3600, metavar="SECONDS")
    authority.add_argument("--check", action="store_true", help="run the self-check first")
    authority.add_argument(
        "--serve-seconds", type=float, default=None, help="stop after this long (for scripts)"
    )
    commands.add_parser("demo", help="run the main demo on embedded defaults")

    args = parser.parse_args(argv)
    if args.command == "authority":
        return asyncio.run(_authority(args))
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
