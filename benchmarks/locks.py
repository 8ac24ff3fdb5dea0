"""One command at a time per output folder and per pretrained-model cache entry.

A lock is a file held with ``fcntl.flock``: the kernel releases it when its holder exits, however
it exits, so a crashed command never leaves a stale lock behind. While held, the file names its
holder (process id, host, command, start time) for the messages of whoever waits for it. The file
itself stays in place: deleting it could let a waiter lock a file nobody else sees any more."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.2


class LockBusy(RuntimeError):
    """A lock stayed held by another command past the caller's timeout; the message names it."""


def holder_description(lock_path) -> str:
    """Who holds ``lock_path``, in words (from what the holder wrote into it)."""
    try:
        holder = json.loads(Path(lock_path).read_text())
        return (f"pid {holder['pid']} on {holder['host']} since {holder['since']} "
                f"({holder['command']})")
    except (OSError, ValueError, KeyError, TypeError):  # being written right now, or by an older version
        return "another process"


def _write_holder(file) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or "python",
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    file.truncate(0)  # opened for appending: the write then starts at the beginning
    file.write(json.dumps(holder))
    file.flush()


def _try_lock(file) -> bool:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def hold_lock(lock_path, what: str, *, timeout: float | None = None, notify=None):
    """Hold the lock file ``lock_path`` (created if missing) for the ``with`` block.

    ``what`` names the guarded thing in messages ("--out runs/x"). When another command holds it,
    ``notify(message)`` is called once with who that is, then this waits: for ever when ``timeout``
    is ``None``, else for ``timeout`` seconds before raising :class:`LockBusy`."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as file:
        _acquire(file, lock_path, what, timeout, notify)
        try:
            _write_holder(file)
            yield
        finally:
            file.truncate(0)  # the next reader must not take us for the holder
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _acquire(file, lock_path: Path, what: str, timeout: float | None, notify) -> None:
    if _try_lock(file):
        return
    if timeout is not None and timeout <= 0:
        raise LockBusy(f"{what} is in use by {holder_description(lock_path)}; wait for it to finish")
    if notify is not None:
        limit = "" if timeout is None else f" (at most {timeout:g} s)"
        notify(f"waiting for {what}{limit}: in use by {holder_description(lock_path)}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _try_lock(file):
        if deadline is not None and time.monotonic() >= deadline:
            raise LockBusy(f"{what} is still in use by {holder_description(lock_path)} after "
                           f"{timeout:g} s; wait for it to finish")
        time.sleep(POLL_SECONDS)
