"""Files that are never left half-written."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_write"]

_ATTEMPTS = 100  # temporary names tried before giving up (each is 32 random bits)


def _create_temporary(path: str) -> tuple[int, str]:
    """Create and open a new temporary file beside ``path``; returns (descriptor, its path).

    The file is created with mode 0666, which the kernel reduces by the process umask (and a
    folder's default ACL) exactly as for ``open(path, "w")``; ``tempfile.mkstemp`` would give
    0600 whatever the umask.
    """
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(folder or ".", f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file through a temporary file in the same folder, then rename it into place.

    A crash mid-write leaves the previous file (if any) intact and at most a stray temporary;
    an exception in ``write`` leaves no temporary. The file gets the permissions a plain
    ``open(path, "wb")`` gives: those of the file it replaces, else 0666 less the umask.

    Args:
        path: the file to write; its folder must exist.
        write: called with the temporary file, open in binary mode.
    """
    path = os.fspath(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):  # a new file keeps 0666 - umask
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
