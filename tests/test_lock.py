"""kit/lock.py: one process at a time; a dead process's lock is stale and cleared; the lock goes with the block."""
import os
import subprocess
import sys

import pytest

from kit.errors import KitError
from kit.lock import PidLock


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_held_writes_this_pid_and_removes_the_file_after_the_block(tmp_path):
    lock = PidLock(tmp_path / "run" / "train.lock")
    with lock.held("run x"):
        assert lock.path.read_text().split()[0] == str(os.getpid()) and lock.holder() == os.getpid()
    assert not lock.path.exists() and lock.holder() is None


def test_the_lock_is_released_when_the_block_fails(tmp_path):
    lock = PidLock(tmp_path / "train.lock")
    with pytest.raises(KeyboardInterrupt):
        with lock.held("run x"):
            raise KeyboardInterrupt
    assert not lock.path.exists()


def test_a_live_holder_is_refused_with_its_pid_and_its_lock_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock = PidLock(tmp_path / "train.lock")
        lock.path.write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(KitError, match=f"run x is being trained right now by process {sleeper.pid}: wait"):
            with lock.held("run x"):
                pytest.fail("entered a block another process holds")
        assert lock.path.read_text().startswith(str(sleeper.pid))  # not taken over, not removed
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_holders_lock_is_stale_and_taken(tmp_path):
    lock = PidLock(tmp_path / "train.lock")
    lock.path.write_text(f"{dead_pid()} {os.uname().nodename}\n")
    assert lock.holder() is None and not lock.path.exists()
    lock.path.write_text(f"{dead_pid()}\n")  # an older lock without the host
    with lock.held("run x"):
        assert lock.holder() == os.getpid()


def test_another_hosts_lock_counts_as_live(tmp_path):
    lock = PidLock(tmp_path / "train.lock")
    lock.path.write_text(f"{dead_pid()} some-other-machine\n")
    assert lock.holder() is not None
