"""A safe state directory on a shared machine: created 0700; one owned by someone else or
writable by others is refused (a planted CA key would let its author mint certificates every
client trusts); a CA key that is not private is never adopted; one readable by others is
tightened with a warning, as ssh does; client-certificate files are written 0600 through
mkstemp + rename, never through a planted symlink."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from grpc_obo.devauthority import DevAuthority, StateDirError, default_world


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_a_new_state_dir_is_created_private(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    async with DevAuthority(world=default_world(with_certificates=False), state_dir=state):
        assert _mode(state) == 0o700
        assert _mode(state / "ca-key.pem") == 0o600 and _mode(state / "ca.pem") == 0o600


async def test_a_state_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    os.chmod(state, 0o777)
    authority = DevAuthority(world=default_world(with_certificates=False), state_dir=state)
    with pytest.raises(StateDirError, match="writable by others"):
        await authority.start()
    assert not (state / "ca-key.pem").exists()


async def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:  # root can hand a directory to another user
        state = tmp_path / "theirs"
        state.mkdir(mode=0o700)
        os.chown(state, 65534, 65534)
    else:  # anyone else: a directory root owns
        state = Path("/")
    authority = DevAuthority(world=default_world(with_certificates=False), state_dir=state)
    with pytest.raises(StateDirError, match="not by you"):
        await authority.start()


async def test_a_planted_or_readable_ca_key_is_not_adopted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with DevAuthority(world=default_world(with_certificates=False), state_dir=state):
        pass
    os.chmod(state / "ca-key.pem", 0o644)  # readable by others: not ours alone any more
    with pytest.raises(StateDirError, match="not private"):
        await DevAuthority(world=default_world(with_certificates=False), state_dir=state).start()
    os.chmod(state / "ca-key.pem", 0o600)
    if os.getuid() == 0:
        os.chown(state / "ca-key.pem", 65534, 65534)  # planted by another user
        with pytest.raises(StateDirError, match="not private"):
            await DevAuthority(
                world=default_world(with_certificates=False), state_dir=state
            ).start()


async def test_a_state_dir_readable_by_others_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "old"
    state.mkdir()
    os.chmod(state, 0o755)  # what earlier versions created
    with caplog.at_level(logging.WARNING, logger="grpc_obo.devauthority"):
        async with DevAuthority(world=default_world(with_certificates=False), state_dir=state):
            pass
    assert _mode(state) == 0o700
    assert any("now 0700" in r.getMessage() for r in caplog.records)


async def test_client_certificates_are_not_written_through_a_planted_symlink(
    tmp_path: Path,
) -> None:
    world = default_world()
    cert = world.app("original").certificates[0]
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "victim.txt"
    target.write_text("untouched")
    planted = state / f"original-{cert.thumbprint_hex[:12].lower()}.pem"
    planted.symlink_to(target)
    async with DevAuthority(world=world, state_dir=state):
        assert target.read_text() == "untouched"
        assert not planted.is_symlink() and _mode(planted) == 0o600
        assert b"PRIVATE KEY" in planted.read_bytes()
