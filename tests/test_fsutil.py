"""kit.fsutil: atomic writes, temporaries of killed runs removed only when their writer is gone, write failures
as one-line messages, the free-space check."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kit import fsutil
from kit.errors import KitError
from tests.fixtures import dead_pid, free_space, running_process, temporary_name

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out" / "a.csv"
    with fsutil.atomic_path(final, suffix=".csv") as tmp:
        assert tmp.parent == final.parent and not tmp.exists()
        assert tmp.name.startswith(".a.csv.") and tmp.name.endswith(".tmp.csv")
        assert f".pid{os.getpid()}@" in tmp.name and fsutil.temporary_final_name(tmp) == "a.csv"
        tmp.write_text("one")
    assert final.read_text() == "one"
    with pytest.raises(RuntimeError), fsutil.atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert final.read_text() == "one" and sorted(p.name for p in final.parent.iterdir()) == ["a.csv"]

    folder = tmp_path / "folder"
    for text in ("first", "second"):
        with fsutil.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(text)
    assert (folder / "f").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out"]
    assert fsutil.write_text_atomic(tmp_path / "t.txt", "x").read_text() == "x"


def test_only_temporaries_whose_writer_is_gone_are_removed(tmp_path: Path) -> None:
    old = time.time() - 2 * fsutil.LEGACY_AGE
    with running_process() as alive:
        names = {"dead": temporary_name("train.npy", dead_pid(), ".npy"),
                 "alive": temporary_name("train.npy", alive, ".npy"),
                 "mine": temporary_name("train.npy", os.getpid(), ".npy"),
                 "legacy-old": ".val.npy.abcd1234.tmp.npy", "legacy-fresh": ".test.npy.efgh5678.tmp.npy",
                 "other-host-old": ".x.npy.abcd1234.pid1@000000.tmp.npy",
                 "other-host-fresh": ".y.npy.abcd1234.pid2@000000.tmp.npy",
                 "not-kits": ".hidden", "a-cache": "train.npy", "swap": ".raw.old", "lookalike": "x.abc.tmp"}
        for key, name in names.items():
            (tmp_path / name).write_bytes(b"\0" * 5000)
            if key.endswith("-old"):
                os.utime(tmp_path / name, (old, old))
        removed = fsutil.remove_stale_temporaries(tmp_path)
        assert sorted(p.name for p, _ in removed) == sorted(names[k] for k in ("dead", "legacy-old", "other-host-old"))
        assert all(freed >= 4096 for _, freed in removed)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            name for key, name in names.items() if key not in ("dead", "legacy-old", "other-host-old"))
        dead_raw = tmp_path / temporary_name("raw", dead_pid())
        (dead_raw / "train").mkdir(parents=True)
        assert fsutil.remove_stale_temporaries(tmp_path, final_name="other") == []
        assert [p for p, _ in fsutil.remove_stale_temporaries(tmp_path, final_name="raw")] == [dead_raw]


def test_a_killed_writers_temporary_is_found_by_the_next_run(tmp_path: Path) -> None:
    """End to end: a process killed inside atomic_path (no `finally` runs) leaves a file the next run removes."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from kit.fsutil import atomic_path
        with atomic_path({str(tmp_path / 'train.npy')!r}, suffix=".npy") as tmp:
            tmp.write_bytes(b"x" * 100000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script])
    assert result.returncode == -signal.SIGKILL
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and fsutil.temporary_final_name(left[0]) == "train.npy"
    assert [p for p, _ in fsutil.remove_stale_temporaries(tmp_path)] == left and not any(tmp_path.iterdir())


def test_write_failures_are_one_line_and_name_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "data" / "raw"
    cases = {errno.ENOSPC: "free space on that disk, or set paths.data_dir to a folder on a bigger one",
             errno.EROFS: "read-only: set paths.data_dir", errno.EACCES: "make it writable",
             errno.ENOTDIR: "a part of that path is a file"}
    for code, fix in cases.items():
        with pytest.raises(KitError) as error, fsutil.writing(target, "paths.data_dir"):
            raise OSError(code, os.strerror(code))
        message = str(error.value)
        assert message.startswith(f"cannot write {target}: [Errno {code}] {os.strerror(code)}: ") and fix in message
        assert "\n" not in message
    with pytest.raises(KitError, match=r"\(.*raw/train/1.jpg\): free space.*, or set data.cache=none$"), \
            fsutil.writing(target, "paths.data_dir", also=", or set data.cache=none"):
        raise OSError(errno.ENOSPC, "No space left on device", str(target / "train" / "1.jpg"))
    with pytest.raises(PermissionError), fsutil.writing(target, "paths.data_dir"):  # reading a source: not ours
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "source.zip"))


def test_require_writable_and_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsutil.require_writable(tmp_path / "new" / "folder", "paths.cache_dir")
    assert (tmp_path / "new" / "folder").is_dir() and not any((tmp_path / "new" / "folder").iterdir())
    (tmp_path / "a-file").write_text("keep me")
    with pytest.raises(KitError, match=r"cannot write .*a-file/cache: \[Errno 20\] Not a directory.*paths.cache_dir"):
        fsutil.require_writable(tmp_path / "a-file" / "cache", "paths.cache_dir")
    assert (tmp_path / "a-file").read_text() == "keep me"

    monkeypatch.setattr(shutil, "disk_usage", free_space(1.2e9))
    fsutil.require_free_space(tmp_path, 10**9, "this", "fix it")
    with pytest.raises(KitError, match=rf"^the cache needs 3.8 GB in {tmp_path}, 1.2 GB free: fix it$"):
        fsutil.require_free_space(tmp_path, 3.8e9, "the cache", "fix it")


def test_a_failed_write_inside_a_temporary_is_about_its_final_path(tmp_path: Path) -> None:
    """atomic_path writes beside the final path: an error there is still that write's."""
    raw = tmp_path / "data" / "raw"
    inside = tmp_path / "data" / temporary_name("raw", os.getpid()) / "train" / "1.jpg"
    for filename in (inside, tmp_path / "data" / ".raw.old" / "x", raw / "train" / "1.jpg", tmp_path):
        with pytest.raises(KitError, match=rf"^cannot write {raw}: \[Errno 13\]"), \
                fsutil.writing(raw, "paths.data_dir"):
            raise PermissionError(errno.EACCES, "Permission denied", str(filename))
    with pytest.raises(PermissionError), fsutil.writing(raw, "paths.data_dir"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "data" / ".rawer.abc.tmp" / "x"))
