"""The parser assembled from the verbs' modules, and `main`: dispatch, exit codes, errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from . import _authority, _decode, _token, _validate
from ._common import (
    EXIT_CODES,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    CliError,
    _default_state_dir,
    _Parser,
    _say,
)


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="grpc-obo",
        description="grpc_obo tools: a local Entra-compatible authority and token helpers.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in (_authority, _token, _decode, _validate):
        verb.add_parser(commands, formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "authority":
            # Absolute paths throughout: the files are read by processes started anywhere.
            args.state_dir = args.state_dir or str(_default_state_dir())
            for name in ("state_dir", "write_env", "write_dotenv"):
                if getattr(args, name):
                    setattr(args, name, os.path.abspath(getattr(args, name)))
            return asyncio.run(_authority.run(args))
        if args.command == "token":
            return _token.run(args)
        if args.command == "decode":
            return _decode.run(args)
        return _validate.run(args)
    except CliError as exc:
        _say(f"grpc-obo {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ValueError as exc:  # ConfigurationError and friends: messages hold no secrets
        _say(f"grpc-obo {args.command}: {exc}", file=sys.stderr)
        return EXIT_INPUT
