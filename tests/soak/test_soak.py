"""The bounded soak as a test: three Original replicas (processes) on one real Redis, a
Downstream API, 50 users and a mixed load through a Redis restart, authority 503 and 429
bursts, a signing-key rollover and a replica restart. tests/soak/run.py has the phases and
exactly which failures and exchanges each allows; the phase table is printed either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.run import SoakConfig, run_soak

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_a_minute_of_mixed_load_through_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await run_soak(SoakConfig(), workdir=tmp_path)
    with capsys.disabled():  # the table belongs in the test output, passed or not
        print("\n" + result.report())
    failed = [f"{check.name}: {check.detail}" for check in result.checks if not check.passed]
    assert not failed, "\n".join(failed)
    assert result.wall < SoakConfig().time_limit
