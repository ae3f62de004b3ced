"""Private files on a shared machine: the state directory and what the authority writes in it.

A state directory holds the CA's key: whoever can write in it (or planted it) could have left a
CA of their own that every client then trusts. So, as ssh treats `~/.ssh`: the directory is
created 0700; one that exists must be a real directory owned by the user and writable by no one
else (`StateDirError` otherwise), and one readable by others is tightened to 0700 with a
warning. A key found in it is adopted only if it is a regular file of the user's, 0600. Every
private file is written through `mkstemp` (O_EXCL, 0600) and renamed into place, so a planted
symlink is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

logger = logging.getLogger("grpc_obo.devauthority")


class StateDirError(ValueError):
    """A state directory (or a file in it) that is not safe to use; says which and why."""


def _owner_checks() -> bool:
    # NOTE: POSIX owners and modes; Windows has neither in this form (ACLs guard it there).
    return hasattr(os, "getuid")


def secure_state_dir(directory: Path) -> Path:
    """Create `directory` 0700 (parents as the umask says), or check an existing one."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = os.lstat(directory)
    except OSError as exc:
        raise StateDirError(f"state directory {directory}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        raise StateDirError(f"state directory {directory} is not a directory (or is a symlink)")
    if not _owner_checks():
        return directory
    if found.st_uid != os.getuid():
        raise StateDirError(
            f"state directory {directory} is owned by uid {found.st_uid}, not by you "
            f"(uid {os.getuid()}): refusing to use (or trust a CA from) it"
        )
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o022:
        raise StateDirError(
            f"state directory {directory} is writable by others (mode {mode:04o}): anyone "
            "could have planted a CA in it; use a new one or `chmod 700` it after checking"
        )
    if mode & 0o077:
        logger.warning(
            "state directory %s was open to others (mode %04o): now 0700", directory, mode
        )
        os.chmod(directory, 0o700)
    return directory


def check_private_file(path: Path) -> bool:
    """Whether `path` may be adopted as a private file of ours: False when it does not exist;
    `StateDirError` when it is a symlink, not a regular file, not ours, or open to others."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(found.st_mode):
        raise StateDirError(f"{path} is not a regular file (a symlink?): refusing to use it")
    if _owner_checks() and (found.st_uid != os.getuid() or stat.S_IMODE(found.st_mode) & 0o077):
        raise StateDirError(
            f"{path} is not private to you (uid {found.st_uid}, mode "
            f"{stat.S_IMODE(found.st_mode):04o}): refusing to use it"
        )
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only (0600). A symlink or file
    planted at `path` is replaced, not written through."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
