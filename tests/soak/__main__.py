"""`python -m tests.soak --report [--json FILE] [--quick]`: run the soak, print its phase table and
checks; exit 0 when every check passed, 1 otherwise (for `make bench` and by hand)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tests.soak.run import SoakConfig, main_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument(
        "--report", action="store_true", help="print the phase table and checks (the default)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="half-length phases (about 35 s of load)"
    )
    parser.add_argument("--rate", type=float, help="calls started per second (default 60)")
    args = parser.parse_args(argv)
    config = SoakConfig()
    if args.quick:
        config = dataclasses.replace(config, scale=0.5)
    if args.rate:
        config = dataclasses.replace(config, rate=args.rate)
    return main_report(config, json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
