"""`make download`: every source, verified extraction, idempotence, and bad zips refused with nothing lost."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path

import pytest

from kit import paths
from kit.data import download, extract
from kit.errors import KitError
from tests.data.test_kaggle_api import FakeApi, http_error
from tests.fixtures import dead_pid, free_space, running_process, temporary_name

TRAIN, TEST = 40, 12  # the competition_zip fixture: 2 x 20 train, 12 test


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time: any change shows."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def zip_bytes(files: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def rebuild(good: Path, out: Path, drop=(), **replace: bytes) -> Path:
    """A copy of the competition zip with members dropped or replaced (test_zip= for test.zip...)."""
    files = members(good)
    files.update({name.replace("_zip", ".zip").replace("_csv", ".csv"): data for name, data in replace.items()})
    out.write_bytes(zip_bytes({n: d for n, d in files.items() if n not in drop}))
    return out


def extract_outer(good: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, data in members(good).items():
        (folder / name).write_bytes(data)
    return folder


def assert_complete(raw: Path, train: int = TRAIN, test: int = TEST) -> None:
    assert len(list((raw / "train").glob("cat.*.jpg"))) == train // 2
    assert len(list((raw / "train").glob("dog.*.jpg"))) == train // 2
    assert len(list((raw / "test").glob("*.jpg"))) == test
    assert (raw / "sample_submission.csv").is_file()
    marker = json.loads((raw / download.MARKER).read_text())
    assert marker["counts"] == {"train": train, "test": test}


@pytest.fixture
def good_raw(cfg, competition_zip):
    """A raw folder already extracted from the good zip, and its snapshot."""
    raw = download.run(cfg, str(competition_zip))
    return raw, snapshot(raw)


def no_leftovers(raw: Path) -> bool:
    return not [p for p in raw.parent.iterdir() if p.name.startswith(".")]


# --- sources ----------------------------------------------------------------------------------------------

def test_from_zip(cfg, competition_zip, capsys):
    before = sha256(competition_zip)
    raw = download.run(cfg, str(competition_zip))
    assert raw == paths.raw_dir(cfg)
    assert_complete(raw)
    assert sha256(competition_zip) == before and not paths.download_dir(cfg).exists()  # read, never copied
    assert "verified and extracted 40 train and 12 test images" in capsys.readouterr().out
    assert no_leftovers(raw)


def test_from_folder_as_kaggle_notebooks_mount_it(cfg, competition_zip, tmp_path):
    folder = extract_outer(competition_zip, tmp_path / "mounted")
    before = snapshot(folder)
    assert_complete(download.run(cfg, str(folder)))
    assert snapshot(folder) == before


def test_kaggle_input_is_used_without_downloading(cfg, competition_zip, tmp_path, capsys):
    cfg.competition.kaggle_input = str(tmp_path / "kaggle-input")
    extract_outer(competition_zip, Path(cfg.competition.kaggle_input) / cfg.competition.slug)
    api = FakeApi(error=AssertionError("must not download inside a Kaggle Notebook"))
    assert_complete(download.run(cfg, api=api))
    assert api.calls == [] and "Kaggle Notebook" in capsys.readouterr().out


def test_kaggle_api_download_then_no_network_next_time(cfg, competition_zip, capsys):
    api = FakeApi(competition_zip)
    assert_complete(download.run(cfg, api=api))
    assert len(api.calls) == 1 and (paths.download_dir(cfg) / f"{cfg.competition.slug}.zip").is_file()
    assert download.run(cfg, api=api) == paths.raw_dir(cfg)
    assert len(api.calls) == 1 and "nothing to do" in capsys.readouterr().out


def test_interrupted_download_is_resumed(cfg, competition_zip):
    target = paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(competition_zip.read_bytes()[:5000])
    Path(f"{target}.kaggle-partial").write_text("{}")  # what the client leaves when interrupted

    class ResumingApi(FakeApi):
        def competition_download_files(self, competition, path=None, force=False, quiet=True):
            super().competition_download_files(competition, path, force, quiet)
            Path(f"{target}.kaggle-partial").unlink()

    api = ResumingApi(competition_zip)
    assert_complete(download.run(cfg, api=api))
    assert api.calls[0][3] is False  # resume, not force


def test_truncated_download_without_marker_is_fetched_again(cfg, competition_zip):
    target = paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(competition_zip.read_bytes()[:5000])
    api = FakeApi(competition_zip)
    assert_complete(download.run(cfg, api=api))
    assert api.calls[0][3] is True  # force: the local file is not worth resuming


def test_rules_not_accepted_leaves_nothing(cfg):
    with pytest.raises(KitError, match=r"competitions/dogs-vs-cats-redux-kernels-edition/rules"):
        download.run(cfg, api=FakeApi(error=http_error(403)))
    assert not paths.raw_dir(cfg).exists()


def test_folder_layout_has_nothing_to_download(cfg, tmp_path, capsys):
    (tmp_path / "mine" / "cat").mkdir(parents=True)
    cfg.competition.layout, cfg.competition.folder = "folder", str(tmp_path / "mine")
    assert download.run(cfg) == tmp_path / "mine"
    assert "nothing to download" in capsys.readouterr().out
    cfg.competition.folder = str(tmp_path / "missing")
    with pytest.raises(KitError, match="competition.folder"):
        download.run(cfg)


# --- idempotence and interruptions ---------------------------------------------------------------------

def test_second_run_does_no_work(cfg, competition_zip, good_raw, monkeypatch, capsys):
    raw, before = good_raw
    monkeypatch.setattr(download, "extract_competition", lambda *a: pytest.fail("extracted again"))
    capsys.readouterr()
    started = time.perf_counter()
    assert download.run(cfg, str(competition_zip)) == raw
    assert time.perf_counter() - started < 1.0
    assert snapshot(raw) == before
    assert "already extracted and verified" in capsys.readouterr().out


def test_a_different_source_is_extracted_again(cfg, competition_zip, good_raw, tmp_path):
    raw, _ = good_raw
    other = shutil.copy(competition_zip, tmp_path / "other.zip")
    download.run(cfg, str(other))
    assert json.loads((raw / download.MARKER).read_text())["source"]["path"] == str(Path(other).resolve())


def test_interrupted_extraction_is_redone(cfg, competition_zip):
    raw = paths.raw_dir(cfg)
    (raw / "train").mkdir(parents=True)  # a half-extracted raw/ without a marker
    (raw / "train" / "cat.0.jpg").write_bytes(b"half")
    killed = raw.parent / temporary_name("raw", dead_pid())  # a killed run's temporary folder
    legacy = raw.parent / ".raw.abc123.tmp"  # one from before names carried the pid: gone once an hour old
    for leftover in (killed, legacy):
        (leftover / "train").mkdir(parents=True)
    os.utime(legacy / "train", (time.time() - 7200,) * 2)
    os.utime(legacy, (time.time() - 7200,) * 2)
    assert_complete(download.run(cfg, str(competition_zip)))
    assert not killed.exists() and not legacy.exists() and no_leftovers(raw)


def test_a_running_extractions_temporary_folder_is_left_alone(cfg, competition_zip):
    """Two downloads into one data folder: the second must not delete what the first is still writing."""
    raw = paths.raw_dir(cfg)
    with running_process() as pid:
        busy = raw.parent / temporary_name("raw", pid)
        fresh_legacy = raw.parent / ".raw.abc123.tmp"  # untagged, but written a moment ago
        for folder in (busy, fresh_legacy):
            (folder / "train").mkdir(parents=True)
        assert_complete(download.run(cfg, str(competition_zip)))
        assert (busy / "train").is_dir() and (fresh_legacy / "train").is_dir()


def test_raw_moved_aside_by_a_killed_swap_is_put_back(cfg, competition_zip, good_raw, capsys):
    raw, before = good_raw
    raw.rename(raw.parent / ".raw.old")  # killed between atomic_path's two renames
    assert download.run(cfg, str(competition_zip)) == raw
    assert snapshot(raw) == before and no_leftovers(raw)
    out = capsys.readouterr().out
    assert "putting back" in out and "nothing to do" in out


def test_interrupt_during_extraction_keeps_the_old_raw(cfg, competition_zip, good_raw, tmp_path, monkeypatch):
    raw, before = good_raw
    real_extract = extract._extract

    def interrupted(inner_zip, files, dest, folder, label):
        if folder == "test":
            raise KeyboardInterrupt
        return real_extract(inner_zip, files, dest, folder, label)

    monkeypatch.setattr(extract, "_extract", interrupted)
    other = shutil.copy(competition_zip, tmp_path / "other.zip")
    with pytest.raises(KeyboardInterrupt):
        download.run(cfg, str(other))
    assert snapshot(raw) == before and no_leftovers(raw)


def test_missing_files_after_marker_are_noticed(cfg, competition_zip, good_raw):
    raw, _ = good_raw
    next((raw / "test").iterdir()).unlink()
    assert_complete(download.run(cfg, str(competition_zip)))


# --- bad sources: a clear message, the good raw/ and the source untouched ---------------------------------

def inner(files: dict[str, bytes], **kw) -> bytes:
    return zip_bytes(files, **kw)


BAD_TEST_ZIPS = {
    "dotdot": ({"test/1.jpg": b"x", "test/../../evil.jpg": b"x"}, (), "a '..' path"),
    "absolute": ({"test/1.jpg": b"x", "/tmp/evil.jpg": b"x"}, (), "an absolute path"),
    "symlink": ({"test/1.jpg": b"x", "test/2.jpg": b"/etc/passwd"}, ("test/2.jpg",), "a symbolic link"),
}


@pytest.mark.parametrize("case", BAD_TEST_ZIPS)
def test_zip_slip_is_refused(cfg, competition_zip, good_raw, tmp_path, case):
    raw, before = good_raw
    files, links, reason = BAD_TEST_ZIPS[case]
    bad = rebuild(competition_zip, tmp_path / "bad.zip", test_zip=inner(files, symlinks=links))
    digest = sha256(bad)
    with pytest.raises(KitError) as err:
        download.run(cfg, str(bad))
    bad_member = [n for n in files if n != "test/1.jpg"][0]
    assert f"refusing member {bad_member!r}" in str(err.value) and reason in str(err.value)
    assert snapshot(raw) == before and sha256(bad) == digest and no_leftovers(raw)
    assert not list(tmp_path.rglob("evil.jpg"))


def test_missing_test_zip(cfg, competition_zip, good_raw, tmp_path):
    raw, before = good_raw
    bad = rebuild(competition_zip, tmp_path / "bad.zip", drop=("test.zip",))
    with pytest.raises(KitError, match=r"test.zip missing from .*bad.zip.*download the competition again"):
        download.run(cfg, str(bad))
    assert snapshot(raw) == before and no_leftovers(raw)


def test_folder_without_test_zip(cfg, competition_zip, tmp_path):
    folder = extract_outer(competition_zip, tmp_path / "mounted")
    (folder / "test.zip").unlink()
    with pytest.raises(KitError, match=r"has no test.zip"):
        download.run(cfg, str(folder))
    assert not paths.raw_dir(cfg).exists()


def test_sample_ids_differ_from_test_ids(cfg, competition_zip, good_raw, tmp_path):
    raw, before = good_raw
    sample = "id,label\n" + "".join(f"{i},0.5\n" for i in [*range(1, 12), 99])
    bad = rebuild(competition_zip, tmp_path / "bad.zip", sample_submission_csv=sample.encode())
    digest = sha256(bad)
    with pytest.raises(KitError) as err:
        download.run(cfg, str(bad))
    message = str(err.value)
    assert "lists 12 ids" in message and "holds 12 images" in message and "'99'" in message and "'12'" in message
    assert snapshot(raw) == before and sha256(bad) == digest and no_leftovers(raw)


def test_unexpected_member_is_refused(cfg, competition_zip, tmp_path):
    bad = rebuild(competition_zip, tmp_path / "bad.zip", train_zip=inner({"__MACOSX/._cat.0.jpg": b"x"}))
    with pytest.raises(KitError, match=r"unexpected member '__MACOSX/._cat.0.jpg' in train.zip"):
        download.run(cfg, str(bad))
    assert not paths.raw_dir(cfg).exists()


@pytest.mark.parametrize("cut, expected", [(-100, "is truncated"), (100_000, "truncated"),
                                            (1000, r"is not a zip file \(or is truncated\)")])
def test_truncated_zip(cfg, competition_zip, good_raw, tmp_path, cut, expected):
    raw, before = good_raw
    bad = tmp_path / "bad.zip"
    bad.write_bytes(competition_zip.read_bytes()[:cut])
    with pytest.raises(KitError, match=expected):
        download.run(cfg, str(bad))
    assert snapshot(raw) == before and no_leftovers(raw)


def flip_byte_inside(zip_path: Path, member: str, out: Path) -> Path:
    """A copy with one byte of `member`'s data changed: the zip opens, its CRC check fails."""
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26:header + 28], "little")
    extra_len = int.from_bytes(data[header + 28:header + 30], "little")
    data[header + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def test_crc_damage_is_caught(cfg, competition_zip, good_raw, tmp_path):
    raw, before = good_raw
    bad = flip_byte_inside(competition_zip, "train.zip", tmp_path / "bad.zip")
    digest = sha256(bad)
    with pytest.raises(KitError, match=r"bad.zip is damaged \(Bad CRC-32"):
        download.run(cfg, str(bad))
    assert snapshot(raw) == before and sha256(bad) == digest and no_leftovers(raw)


def test_damaged_download_says_to_delete_it(cfg, competition_zip, tmp_path):
    bad = flip_byte_inside(competition_zip, "test.zip", tmp_path / "bad.zip")
    target = paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    target.parent.mkdir(parents=True)
    shutil.copy(bad, target)
    with pytest.raises(KitError, match=r"damaged .* \(delete .*\.zip first"):
        download.run(cfg, api=FakeApi(error=AssertionError("no download needed")))
    assert target.is_file() and not paths.raw_dir(cfg).exists()


def test_missing_from_path(cfg, tmp_path):
    with pytest.raises(KitError, match="no such file or folder"):
        download.run(cfg, str(tmp_path / "nope.zip"))


# --- a full disk, a folder that cannot be written: one line naming the path and the fix, nothing lost ---------

def test_disk_full_during_extraction_keeps_the_old_raw(cfg, competition_zip, good_raw, tmp_path, monkeypatch):
    raw, before = good_raw
    real_copy, copied = extract._copy, []

    def filling_up(zf, info, target, source, progress=False):
        if len(copied) == 45:  # the scratch copies and most train images went in
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(target)
        return real_copy(zf, info, target, source, progress)

    monkeypatch.setattr(extract, "_copy", filling_up)
    other = shutil.copy(competition_zip, tmp_path / "other.zip")
    with pytest.raises(KitError) as error:
        download.run(cfg, str(other))
    assert str(error.value) == (f"cannot write {raw}: [Errno 28] No space left on device: free space on that disk, "
                                "or set paths.data_dir to a folder on a bigger one; the partial extraction was "
                                "removed, the previous raw/ (if any) is kept")
    assert snapshot(raw) == before and no_leftovers(raw)


def test_too_little_free_space_is_refused_before_extracting(cfg, competition_zip, good_raw, tmp_path, monkeypatch):
    raw, before = good_raw
    monkeypatch.setattr(shutil, "disk_usage", free_space(1e6))
    other = shutil.copy(competition_zip, tmp_path / "other.zip")
    with pytest.raises(KitError, match=rf"^extracting other.zip needs 67 MB in {raw.parent}, 1 MB free: free space on "
                                       r"that disk, or set paths.data_dir to a folder on a bigger one$"):
        download.run(cfg, str(other))
    assert snapshot(raw) == before and no_leftovers(raw)


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_data_dir_that_cannot_be_created(cfg, competition_zip, tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg.paths.data_dir = str(blocker / "data") if where == "under-a-file" else "/proc/kit-no-such-dir"
    with pytest.raises(KitError) as error:
        download.run(cfg, str(competition_zip))
    message, competition = str(error.value), paths.competition_dir(cfg)
    if where == "under-a-file":
        assert message.startswith(f"cannot write {competition}: [Errno 20] Not a directory")
        assert message.endswith("a part of that path is a file, not a folder: set paths.data_dir to a folder")
    else:
        assert message.startswith(f"cannot write {competition}: [Errno 2] No such file or directory")
        assert message.endswith("that folder cannot be created there: set paths.data_dir to a writable folder")
    assert "\n" not in message and blocker.read_text() == "not a folder"


def test_disk_full_during_an_api_download_keeps_what_was_downloaded(cfg, competition_zip):
    class FillingApi(FakeApi):
        def competition_download_files(self, competition, path=None, force=False, quiet=True):
            Path(path, f"{competition}.zip").write_bytes(competition_zip.read_bytes()[:5000])
            Path(path, f"{competition}.zip.kaggle-partial").write_text("{}")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KitError) as error:
        download.run(cfg, api=FillingApi(competition_zip))
    target = paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    assert str(error.value) == (f"cannot write {target.parent}: [Errno 28] No space left on device: free space on "
                                "that disk, or set paths.data_dir to a folder on a bigger one; what was downloaded "
                                "is kept, `make download` resumes it")
    assert target.stat().st_size == 5000 and not paths.raw_dir(cfg).exists()


# --- files changed after extraction: download notices, so "re-extract with make download" really fixes it ------

def test_a_damaged_test_image_is_extracted_again(cfg, competition_zip, good_raw, capsys):
    raw, before = good_raw
    damaged = raw / "test" / "5.jpg"
    damaged.write_bytes(damaged.read_bytes()[:300])  # truncated, as a failing disk or an editor leaves it
    capsys.readouterr()
    download.run(cfg, str(competition_zip))
    assert f"{raw} changed since it was extracted (test/5.jpg changed; 1 changed, 0 missing, 0 added): extracting " \
           "again" in capsys.readouterr().out
    assert {name: size for name, (size, _) in snapshot(raw).items()} == {n: s for n, (s, _) in before.items()}
    assert_complete(raw)
    download.run(cfg, str(competition_zip))
    assert "nothing to do" in capsys.readouterr().out


def test_an_added_file_and_an_old_marker_are_extracted_again(cfg, competition_zip, good_raw, capsys):
    raw, _ = good_raw
    (raw / "train" / "cat.999.jpg").write_bytes(b"someone else's file")
    capsys.readouterr()
    download.run(cfg, str(competition_zip))
    assert "(train/cat.999.jpg was added; 0 changed, 0 missing, 1 added)" in capsys.readouterr().out
    assert not (raw / "train" / "cat.999.jpg").exists()
    marker = json.loads((raw / download.MARKER).read_text())
    del marker["files"]  # what kit wrote before it recorded the files
    (raw / download.MARKER).write_text(json.dumps(marker))
    download.run(cfg, str(competition_zip))
    assert "extracted by an older kit that did not record its files" in capsys.readouterr().out
    assert "files" in json.loads((raw / download.MARKER).read_text())


@pytest.mark.real
def test_real_mini_competition(cfg, real_competition_zip, capsys):
    started = time.perf_counter()
    raw = download.run(cfg, str(real_competition_zip))
    first = time.perf_counter() - started
    assert_complete(raw, train=3000, test=2000)
    started = time.perf_counter()
    download.run(cfg, str(real_competition_zip))
    second = time.perf_counter() - started
    assert second < 2.0
    out = capsys.readouterr().out
    assert "(3,000 train, 2,000 test): nothing to do" in out
    print(f"download: first run {first:.1f} s, second run {second:.3f} s")


def test_from_an_extracted_folder_links_it_read_in_place(cfg, competition_zip, tmp_path, capsys):
    """train/ and test/ already extracted beside the sample csv: raw/ links to them (no copy), checked, idempotent."""
    folder = tmp_path / "extracted"
    folder.mkdir()
    files = members(competition_zip)
    (folder / "sample_submission.csv").write_bytes(files["sample_submission.csv"])
    for name in ("train.zip", "test.zip"):
        with zipfile.ZipFile(io.BytesIO(files[name])) as inner:
            inner.extractall(folder)
    before = snapshot(folder)
    raw = download.run(cfg, str(folder))
    assert_complete(raw)
    assert (raw / "train").is_symlink() and (raw / "train").resolve() == (folder / "train").resolve()
    assert "linked (read in place, not copied)" in capsys.readouterr().out
    download.run(cfg, str(folder))
    assert "nothing to do" in capsys.readouterr().out
    (folder / "test" / "3.jpg").write_bytes(b"changed")  # a changed source file is noticed
    download.run(cfg, str(folder))
    assert "changed since it was extracted" in capsys.readouterr().out
    before.pop("test/3.jpg")
    assert {k: v for k, v in snapshot(folder).items() if k != "test/3.jpg"} == before
