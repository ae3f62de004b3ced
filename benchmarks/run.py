"""`make bench`: every benchmark, one after the other (each bounded; a few minutes in all).

Numbers are ratios against baselines measured in the same run: this machine is shared and
noisy, so absolute timings mean little and nothing here is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["server_bench.py", "server_instructions.py", "cache_bench.py"]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n== {name} ==", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / name)], timeout=900)
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
