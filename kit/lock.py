"""A lock file holding a process's pid: one process at a time trains a run.

    with RunDir(path).lock.held(f"run {name}"):   # KitError naming the holder if a live process has it
        ...train...

The file is created with O_EXCL, so of two processes starting at the same moment exactly one gets it. A
lock whose process has died (killed, crashed, the machine rebooted) is stale: it is removed when next
looked at. Signal 0 tells whether a pid is alive on this machine; a lock written on another host (a shared
disk) is taken as live, since its process cannot be asked.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from kit.errors import KitError
from kit.fsutil import pid_alive


def busy_error(what: str, pid: int | None) -> KitError:
    """The one message for a run another process is training."""
    return KitError(f"{what} is being trained right now by process {pid}: wait for it to finish (or stop it), "
                    f"or train another run beside it with --set train.resume=false")


class PidLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def holder(self) -> int | None:
        """The pid of the live process holding the lock, else None (a dead process's lock is removed)."""
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host and host != socket.gethostname():
            return pid  # another machine's process: it cannot be asked, so it counts as alive
        if not pid_alive(pid):
            self.path.unlink(missing_ok=True)  # stale: its process died without releasing it
            return None
        return pid

    @contextlib.contextmanager
    def held(self, what: str):
        """Hold the lock while the block runs; KitError naming the holder if another live process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.holder()  # clears a stale lock
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # another process took it between the look and the open
            raise busy_error(what, self.holder()) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        try:
            yield self
        finally:
            self.path.unlink(missing_ok=True)
