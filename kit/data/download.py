"""Get the competition files and extract them, verified, into data/<slug>/raw.

    make download                                 # python -m kit download
    python -m kit download --from path/to.zip     # the zip Kaggle serves, or a folder of its files

The source is, in order: `--from` (the zip Kaggle serves, or a folder holding train.zip, test.zip
and sample_submission.csv, as Kaggle Notebooks mount it), the Kaggle Notebook mount
(`paths.kaggle_input_dir`), or a Kaggle API download into data/<slug>/download. Sources are only
read. Extraction goes to a temporary folder that replaces raw/ only once everything is verified
(member names, CRCs, counts, sample ids == test ids); raw/.kit-complete.json then records the
source and the counts, so the next run with the same source does nothing.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from kit.data import kaggle_api
from kit import paths as kit_paths
from kit.config import Config
from kit.errors import KitError
from kit.fsutil import atomic_path

MARKER = ".kit-complete.json"
REQUIRED = ("train.zip", "test.zip", "sample_submission.csv")
SAMPLE = "sample_submission.csv"
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def source_identity(path: Path) -> dict:
    """What makes a source the same source next time: where it is, its size and time (cheap: stat only)."""
    path = path.resolve()
    if path.is_dir():
        files = {name: _stat(path / name) for name in REQUIRED if (path / name).is_file()}
        return {"kind": "folder", "path": str(path), "files": files}
    return {"kind": "zip", "path": str(path), **_stat(path)}


def _stat(path: Path) -> dict:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.is_file())


def complete_marker(raw: Path, identity: dict | None = None) -> dict | None:
    """The marker of a finished extraction whose files are all still there (and, if given, from `identity`)."""
    try:
        marker = json.loads((raw / MARKER).read_text())
        counts = marker["counts"]
    except (OSError, ValueError, KeyError, TypeError):
        if raw.exists():
            print(f"{raw} has no valid {MARKER} (an interrupted extraction?): extracting again", flush=True)
        return None
    if identity is not None and marker.get("source") != identity:
        print(f"{raw} was extracted from {marker.get('source', {}).get('path')} (as it was then): extracting "
              f"{identity['path']} instead", flush=True)
        return None
    if not (raw / SAMPLE).is_file():
        return None
    if count_files(raw / "train") != counts.get("train") or count_files(raw / "test") != counts.get("test"):
        print(f"{raw} no longer holds the {counts.get('train')} train / {counts.get('test')} test files it was "
              f"extracted with: extracting again", flush=True)
        return None
    return marker


def _remove_leftovers(raw: Path) -> None:
    """Temporary folders an interrupted extraction (killed process) left beside raw/."""
    for leftover in [*raw.parent.glob(f".{raw.name}.*.tmp*"), raw.parent / f".{raw.name}.old"]:
        if leftover.exists():
            print(f"removing {leftover}, left by an interrupted extraction", flush=True)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink()


def _local_source(cfg: Config, source: str | None) -> Path | None:
    """--from, else the Kaggle Notebook mount, else a finished earlier API download, else None."""
    if source:
        path = Path(source).expanduser()
        if not path.exists():
            raise KitError(f"--from {source}: no such file or folder: pass the competition zip or a folder holding "
                           f"{', '.join(REQUIRED)}")
        return path
    mounted = kit_paths.kaggle_input_dir(cfg)
    if mounted.is_dir():
        print(f"found the competition mounted at {mounted} (Kaggle Notebook): using it, no download", flush=True)
        return mounted
    downloaded = kit_paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    if kaggle_api.download_incomplete_reason(downloaded) is None:
        return downloaded
    return None


def run(cfg: Config, source: str | None = None, api: Any = None) -> Path:
    """Make raw_dir(cfg) hold the verified competition files; return it. `api`: a KaggleApi (tests)."""
    raw = kit_paths.raw_dir(cfg)
    if cfg.competition.layout == "folder":
        return _folder_layout(cfg, raw, source)
    _remove_leftovers(raw)
    path = _local_source(cfg, source)
    marker = complete_marker(raw, source_identity(path) if path else None)
    if marker:
        counts = marker["counts"]
        print(f"raw data already extracted and verified in {raw} ({counts['train']:,} train, {counts['test']:,} "
              f"test): nothing to do", flush=True)
        return raw
    downloaded = kit_paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    if path is None:
        path = _download(cfg, api)
    started = time.monotonic()
    try:
        counts = extract_competition(path, raw)
    except KitError as exc:
        if path.resolve() != downloaded.resolve():
            raise
        raise KitError(f"{exc} (delete {path} first, or it is used again)") from None
    print(f"verified and extracted {counts['train']:,} train and {counts['test']:,} test images and {SAMPLE} "
          f"(ids match the test images) from {path} into {raw} in {time.monotonic() - started:.1f} s", flush=True)
    return raw


def _folder_layout(cfg: Config, raw: Path, source: str | None) -> Path:
    if source:
        raise KitError(f"--from is for competition zips, but competition.layout is 'folder' ({raw}): drop --from, "
                       f"or set competition.layout=kaggle-flat")
    if not cfg.competition.folder or not raw.is_dir():
        raise KitError(f"competition.layout is 'folder' but competition.folder {cfg.competition.folder!r} is not a "
                       f"folder: set competition.folder to the folder holding one sub-folder per class")
    print(f"competition.layout is 'folder': nothing to download, your folder {raw} is used in place", flush=True)
    return raw


def _download(cfg: Config, api: Any) -> Path:
    """Download with the Kaggle API; a finished-looking but unreadable zip is fetched again from scratch."""
    slug = cfg.competition.slug
    target = kit_paths.download_dir(cfg) / f"{slug}.zip"
    refetch = target.is_file() and not Path(f"{target}.kaggle-partial").exists()
    if target.exists():
        print(f"{kaggle_api.download_incomplete_reason(target)}: "
              f"{'downloading it again' if refetch else 'resuming the download'}", flush=True)
    return kaggle_api.download_competition(slug, target.parent, api=api, force=refetch)


def extract_competition(source: Path, raw: Path) -> dict:
    """Extract and verify `source` (zip or folder) into `raw`, replacing it only on success; return counts."""
    label = source.name
    identity = source_identity(source)
    with atomic_path(raw) as tmp:
        tmp.mkdir()
        scratch = tmp / ".kit-scratch"
        scratch.mkdir()
        members = _gather(source, scratch)
        train = _safe_members(members["train.zip"], "train", label)
        test = _safe_members(members["test.zip"], "test", label)
        _check_sample_ids(members[SAMPLE], test, label)
        counts = {"train": _extract(members["train.zip"], train, tmp, "train", label),
                  "test": _extract(members["test.zip"], test, tmp, "test", label)}
        shutil.copyfile(members[SAMPLE], tmp / SAMPLE)
        shutil.rmtree(scratch)
        marker = {"source": identity, "counts": counts,
                  "extracted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return counts


def _gather(source: Path, scratch: Path) -> dict[str, Path]:
    """Paths of train.zip, test.zip and sample_submission.csv: the folder's own, or copied out of the zip."""
    if source.is_dir():
        missing = [name for name in REQUIRED if not (source / name).is_file()]
        if missing:
            raise KitError(f"{source} has no {', '.join(missing)}: --from expects the competition zip or a folder "
                           f"holding {', '.join(REQUIRED)}")
        return {name: source / name for name in REQUIRED}
    problem = kaggle_api.zip_problem(source)
    if problem:
        raise KitError(f"{problem}: download the competition again (`make download`) or pass the right file "
                       f"with --from")
    try:
        with zipfile.ZipFile(source) as outer:
            names = set(outer.namelist())
            missing = [name for name in REQUIRED if name not in names]
            if missing:
                held = ", ".join(sorted(names)[:5]) or "nothing"
                raise KitError(f"{', '.join(missing)} missing from {source} (it holds {held}): download the "
                               f"competition again with `make download`")
            for name in REQUIRED:  # each copy reads to the end, so zipfile checks its CRC
                _copy_member(outer, name, scratch / name)
    except ZIP_ERRORS as exc:
        raise KitError(f"{source} is damaged ({exc}): download the competition again with `make download`") from None
    return {name: scratch / name for name in REQUIRED}


def _copy_member(outer: zipfile.ZipFile, name: str, target: Path) -> None:
    info = outer.getinfo(name)
    with outer.open(info) as src, open(target, "wb") as out, \
            tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"reading {name}", leave=False) as bar:
        while chunk := src.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def _safe_members(inner_zip: Path, folder: str, label: str) -> list[zipfile.ZipInfo]:
    """The files of train.zip / test.zip, all of them `<folder>/<name>`, none escaping the target."""
    inner = f"{inner_zip.name} in {label}"
    try:
        with zipfile.ZipFile(inner_zip) as zf:
            infos = zf.infolist()
    except ZIP_ERRORS as exc:
        raise KitError(f"{inner} is not a readable zip ({exc}): download the competition again") from None
    files = []
    for info in infos:
        reason = _unsafe_reason(info)
        if reason:
            raise KitError(f"refusing member {info.filename!r} of {inner}: {reason} would land outside the target "
                           f"folder; this is not a genuine competition zip, download it again from Kaggle")
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() and parts == (folder,):
            continue
        if len(parts) != 2 or parts[0] != folder or info.is_dir():
            raise KitError(f"unexpected member {info.filename!r} in {inner}: expected only {folder}/<file>; "
                           f"is this the right competition zip?")
        files.append(info)
    if not files:
        raise KitError(f"{inner} holds no {folder}/ files: download the competition again")
    return files


def _check_sample_ids(sample_csv: Path, test: list[zipfile.ZipInfo], label: str) -> None:
    """sample_submission.csv must list exactly the test images' ids (a submission is built from them)."""
    import pandas as pd

    try:
        ids = pd.read_csv(sample_csv, dtype=str)["id"].str.strip()
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise KitError(f"{SAMPLE} in {label} is not a CSV with an id column ({type(exc).__name__}): download the "
                       f"competition again") from None
    sample_ids = set(ids)
    test_ids = {PurePosixPath(info.filename).stem for info in test}
    if sample_ids != test_ids or len(ids) != len(sample_ids):
        only_csv = sorted(sample_ids - test_ids)[:3]
        only_test = sorted(test_ids - sample_ids)[:3]
        raise KitError(f"{SAMPLE} in {label} lists {len(ids)} ids ({len(sample_ids)} distinct) but test.zip holds "
                       f"{len(test_ids)} images; e.g. only in the csv: {only_csv}, only in test.zip: {only_test}: "
                       f"download the competition again")


def _extract(inner_zip: Path, files: list[zipfile.ZipInfo], dest: Path, folder: str, label: str) -> int:
    """Extract the checked members (zipfile checks each CRC) and confirm every one arrived."""
    try:
        with zipfile.ZipFile(inner_zip) as zf:
            for info in tqdm(files, desc=f"extracting {folder}", unit="file", leave=False):
                zf.extract(info, dest)
    except ZIP_ERRORS as exc:
        raise KitError(f"{inner_zip.name} in {label} is damaged ({exc}): download the competition again "
                       f"with `make download`") from None
    count = count_files(dest / folder)
    if count != len(files):
        raise KitError(f"extracted {count} files from {inner_zip.name} in {label} but it lists {len(files)} "
                       f"(duplicate names?): download the competition again")
    return count
