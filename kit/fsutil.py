"""Atomic writes: every output goes to a temporary name in the same folder and is renamed.

A failed or interrupted run therefore never leaves a half-written file under the real name,
and never overwrites the previous good output. A killed run (no `finally`) leaves its temporary
behind: the name carries the writer's process id and a tag of its host and pid namespace
(`.<name>.<random>.pid<pid>@<host>.tmp<suffix>`), so `remove_stale_temporaries` can remove exactly those
whose writer is gone and never one a running process is still writing. Names without the tag (written
before it existed) count as gone once they have not changed for `LEGACY_AGE` seconds.

`writing(path, setting)` turns an OSError while writing into a one-line KitError naming the path and the fix;
`require_free_space` refuses a write that cannot fit, with the numbers.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from kit.errors import KitError

LEGACY_AGE = 3600.0  # seconds without a change after which an untagged temporary's writer counts as gone
# .<name>.<random>[.pid<pid>@<host>].tmp<suffix>, as atomic_path names them through tempfile.mkstemp
_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]+?"
                        r"(?:\.pid(?P<pid>\d+)@(?P<host>[0-9a-f]{6}))?\.tmp(?P<suffix>.*)$")


@functools.lru_cache(maxsize=None)  # one stat and digest per process, not per atomic write
def _host_tag() -> str:
    """Who can see the writer's pid: the host and its process-id namespace (containers on one host differ)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha1(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:6]


def temporary_beside(final: Path, suffix: str = "", folder: bool = False) -> Path:
    """A new, unique temporary file (or folder) beside `final`, named so remove_stale_temporaries knows its writer."""
    tag = f".pid{os.getpid()}@{_host_tag()}"
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=f"{tag}.tmp{suffix}", dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{tag}.tmp{suffix}", dir=final.parent)
    os.close(fd)
    return Path(name)


def file_in_the_way(path: Path) -> Path | None:
    """The first parent of `path` that exists but is a file (so `path` can never be made), else None."""
    return next((parent for parent in Path(path).parents if parent.exists() and not parent.is_dir()), None)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    Works for files and folders (whatever the block creates at the temporary path).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(final, suffix)
    tmp.unlink()  # the block decides whether it is a file or a folder
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Write `text` to `final` through a temporary file and a rename."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


# --- temporaries left by killed runs ------------------------------------------------------------------------

def temporary_final_name(path: Path) -> str | None:
    """The final file name an atomic_path temporary was for (None: not one of kit's temporaries)."""
    match = _TEMPORARY.match(path.name)
    return match["final"] if match else None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (signal 0 only asks); when it cannot be told, alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process; anything else: cannot tell, so keep it
        return True
    return True


def _last_change(path: Path) -> float:
    """Newest mtime of `path` and, for a folder, of what is directly inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def writer_gone(path: Path, legacy_age: float = LEGACY_AGE) -> bool:
    """Whether the process that was writing the kit temporary `path` has ended (False if it may still run)."""
    match = _TEMPORARY.match(path.name)
    if match is None:
        return False
    if match["pid"] is not None and match["host"] == _host_tag():
        return not pid_alive(int(match["pid"]))
    # untagged (older kit) or written on another host (a shared disk): only a long silence tells
    try:
        return time.time() - _last_change(path) > legacy_age
    except OSError:
        return False


def disk_bytes(path: Path) -> int:
    """Bytes `path` (a file or a folder tree) holds on disk (allocated blocks: a sparse file counts what it uses)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_blocks * 512
        total = 0
        for root, _, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
        return total
    except OSError:
        return 0


def remove_stale_temporaries(folder: Path, final_name: str | None = None,
                             legacy_age: float = LEGACY_AGE) -> list[tuple[Path, int]]:
    """Remove the atomic_path temporaries in `folder` (only those for `final_name`, if given) whose writer is gone.

    Returns (path, bytes freed) for each one removed. A temporary a running process may still be
    writing is left alone; so is every file kit did not name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        name = temporary_final_name(path)
        if name is None or (final_name is not None and name != final_name) or not writer_gone(path, legacy_age):
            continue
        size = disk_bytes(path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # another run cleaned it first, or the folder is read-only: tidying is best effort
        removed.append((path, size))
    return removed


# --- write failures and free space ----------------------------------------------------------------------------

def gigabytes(n: float) -> str:
    """`n` bytes for a message: '3.8 GB', '120 MB', '8 kB'."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def write_fix(error: OSError, setting: str) -> str:
    """What to do about an OSError writing somewhere `setting` decides."""
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on that disk, or set {setting} to a folder on a bigger one"
    if code == errno.EROFS:
        return f"that file system is read-only: set {setting} to a writable folder"
    if code in (errno.EACCES, errno.EPERM):
        return f"make it writable, or set {setting} to a writable folder"
    if code == errno.ENOTDIR:
        return f"a part of that path is a file, not a folder: set {setting} to a folder"
    if code == errno.ENOENT:
        return f"that folder cannot be created there: set {setting} to a writable folder"
    return f"check that disk, or set {setting} to a folder on another one"


def write_error(path: Path | str, error: OSError, setting: str, also: str = "") -> KitError:
    """A one-line KitError for an OSError while writing `path`: 'cannot write <path>: [Errno N] ...: <fix>'."""
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    cause = f"[Errno {error.errno}] {error.strerror}" if error.strerror else f"{type(error).__name__}: {error}"
    return KitError(f"cannot write {path}: {cause}{where}: {write_fix(error, setting)}{also}")


@contextlib.contextmanager
def writing(path: Path | str, setting: str, also: str = "") -> Iterator[None]:
    """Turn an OSError raised in the block into write_error(path, ...): one line naming the path and the fix."""
    try:
        yield
    except OSError as error:
        if error.filename and not _related(Path(os.fsdecode(error.filename)), Path(path)):
            raise  # about another file (a source being read): not this write's failure
        raise write_error(path, error, setting, also) from None


def _related(a: Path, b: Path) -> bool:
    """Whether `a` is `b`, inside it, one of its parents, or inside one of b's atomic_path temporaries (or the
    previous folder moved aside): what writing `b` touches. Absolute, not resolved: no file system access."""
    a, b = Path(os.path.abspath(a)), Path(os.path.abspath(b))
    if a == b or a in b.parents or b in a.parents:
        return True
    if b.parent not in a.parents:
        return False
    beside = a.relative_to(b.parent).parts[0]
    return temporary_final_name(Path(beside)) == b.name or beside == f".{b.name}.old"


def require_writable(folder: Path, setting: str, also: str = "") -> None:
    """Create `folder` if needed and check a file can be written in it (a KitError naming the fix if not)."""
    folder = Path(folder)
    with writing(folder, setting, also):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kit-write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)


def require_free_space(folder: Path, needed: int, what: str, fix: str) -> None:
    """Refuse (KitError with the numbers) when `folder`'s file system has less than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise KitError(f"{what} needs {gigabytes(needed)} in {folder}, {gigabytes(free)} free: {fix}")
