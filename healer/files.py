"""Reading the small files healer is pointed at (policies, the apps list, tokens), safely.

A path in configuration may name anything: a FIFO that blocks start-up until
someone writes to it, ``/dev/zero`` that never ends, a file far larger than
what it should hold. Every such file is read through ``read_bounded``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory where a file was expected."""


def read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a regular file, without ever blocking on anything else.

    Raises ``NotRegularFile`` for a FIFO, a device (``/dev/zero``), a socket or
    a directory, also behind a symlink: opening a FIFO for reading waits for a
    writer, and a device can be read forever. The file is opened without
    blocking and judged by ``fstat`` of what was opened, so a file swapped
    between a check and the open cannot slip through. OSError otherwise.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path}: not a regular file")
        return handle.read(limit + 1)


#: A token file holds one line; anything this large is not a token.
MAX_TOKEN_BYTES = 4096


class TooLarge(OSError):
    """A file larger than what it should hold."""


def read_text(path: Path, limit: int) -> str:
    """A regular file of at most ``limit`` bytes as UTF-8 text (a leading BOM dropped).

    Raises ``NotRegularFile`` or ``TooLarge`` (both OSError) as their names say,
    another OSError when it cannot be read, UnicodeDecodeError when it is not UTF-8.
    """
    data = read_bounded(path, limit)
    if len(data) > limit:
        raise TooLarge(f"{path}: larger than {limit:,} bytes")
    return data.decode("utf-8-sig")
