"""Get the competition files and extract them, verified, into data/<slug>/raw.

    make download                                 # python -m kit download
    python -m kit download --from path/to.zip     # the zip Kaggle serves, or a folder of its files

The source is, in order: `--from` (the zip Kaggle serves, or a folder holding train.zip, test.zip
and sample_submission.csv, as Kaggle Notebooks mount it, or already extracted train/ and test/ folders
beside sample_submission.csv), the Kaggle Notebook mount (the first of `paths.kaggle_input_dirs` holding one
of those forms, or <slug>.zip), or a Kaggle API download into data/<slug>/download. Sources are only
read. Already extracted folders are not copied: raw/train and raw/test become symbolic links to them (kit
never modifies raw data; a 25,000-image copy would buy nothing), after the same sample-id check. Extraction goes to a temporary folder that replaces raw/ only once everything is verified
(member names, CRCs, counts, sample ids == test ids); raw/.kit-complete.json then records the
source, the counts and every extracted file's size and mtime, so the next run with the same source does
nothing, while a file changed, removed or added since (a damaged test image) makes it extract again and say why.
A write that fails (disk full, read-only or misplaced paths.data_dir) is a one-line KitError naming the
folder and the fix; the partial extraction is removed and the previous raw/ stays.

Over 300 lines: every way the raw folder can come out wrong (sources, unsafe or missing members, CRCs, ids,
interruptions, changed files, full or unwritable disks) is handled in this one module, beside the extraction.
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
from kit.fsutil import (atomic_path, gigabytes, remove_stale_temporaries, require_free_space, require_writable,
                        writing)

MARKER = ".kit-complete.json"
REQUIRED = ("train.zip", "test.zip", "sample_submission.csv")
SAMPLE = "sample_submission.csv"
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)
DATA_DIR_KEY = "paths.data_dir"
EXTRACT_MARGIN = 64 * 1024 * 1024  # bytes kept free beyond what an extraction writes
_NO_SPACE = f"free space on that disk, or set {DATA_DIR_KEY} to a folder on a bigger one"
_KEPT = "; the partial extraction was removed, the previous raw/ (if any) is kept"


def source_identity(path: Path) -> dict:
    """What makes a source the same source next time: where it is, its size and time (cheap: stat only)."""
    path = path.resolve()
    if path.is_dir() and extracted_folders(path):
        return {"kind": "extracted", "path": str(path), "files": {SAMPLE: _stat(path / SAMPLE)}}
    if path.is_dir():
        files = {name: _stat(path / name) for name in REQUIRED if (path / name).is_file()}
        return {"kind": "folder", "path": str(path), "files": files}
    return {"kind": "zip", "path": str(path), **_stat(path)}


def _stat(path: Path) -> dict:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _image_folder(source: Path, name: str) -> Path | None:
    """source/<name>, or source/<name>/<name> when that is where the files are (a zip unpacked with its folder)."""
    folder = source / name
    if not folder.is_dir():
        return None
    nested = folder / name
    if nested.is_dir():
        with os.scandir(folder) as entries:
            if not any(entry.is_file() for entry in entries):
                return nested
    return folder


def extracted_folders(source: Path) -> dict[str, Path] | None:
    """{"train": folder, "test": folder} when `source` holds them already extracted beside sample_submission.csv."""
    if not (source / SAMPLE).is_file():
        return None
    folders = {name: _image_folder(source, name) for name in ("train", "test")}
    return folders if all(folders.values()) else None


def notebook_source(folder: Path, slug: str) -> Path | None:
    """What a Kaggle Notebook mount at `folder` offers: itself (extracted folders, preferred: nothing to copy; or
    the three files), its <slug>.zip, or None. A sample csv without the rest is a one-line error."""
    if not folder.is_dir():
        return None
    if extracted_folders(folder) or all((folder / name).is_file() for name in REQUIRED):
        return folder
    if (folder / f"{slug}.zip").is_file():
        return folder / f"{slug}.zip"
    if (folder / SAMPLE).is_file():
        held = ", ".join(sorted(p.name for p in folder.iterdir())[:6])
        raise KitError(f"{folder} holds {SAMPLE} but neither train.zip and test.zip nor train/ and test/ folders "
                       f"(it holds {held}): attach the whole competition, or pass --from")
    return None


def count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.is_file())


def file_manifest(raw: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file extracted into `raw` (train/, test/, the sample csv)."""
    files = {}
    for folder in ("train", "test"):
        if (raw / folder).is_dir():
            with os.scandir(raw / folder) as entries:
                for entry in entries:
                    if entry.is_file():
                        info = entry.stat()
                        files[f"{folder}/{entry.name}"] = [info.st_size, info.st_mtime_ns]
    if (raw / SAMPLE).is_file():
        info = (raw / SAMPLE).stat()
        files[SAMPLE] = [info.st_size, info.st_mtime_ns]
    return files


def manifest_changes(recorded: dict, now: dict) -> str | None:
    """What differs between two manifests ('test/5.jpg changed; 1 changed, 0 missing, 0 added'), or None."""
    changed = sorted(name for name in recorded.keys() & now.keys() if list(recorded[name]) != list(now[name]))
    missing, added = sorted(recorded.keys() - now.keys()), sorted(now.keys() - recorded.keys())
    if not (changed or missing or added):
        return None
    first = (f"{changed[0]} changed" if changed else f"{missing[0]} is missing" if missing
             else f"{added[0]} was added")
    return f"{first}; {len(changed)} changed, {len(missing)} missing, {len(added)} added"


def complete_marker(raw: Path, identity: dict | None = None) -> dict | None:
    """The marker of a finished extraction whose files are all still as extracted (and, if given, from `identity`)."""
    try:
        marker = json.loads((raw / MARKER).read_text())
        if {"train", "test"} - set(marker["counts"]):
            raise KeyError("counts")
    except (OSError, ValueError, KeyError, TypeError):
        if raw.exists():
            print(f"{raw} has no valid {MARKER} (an interrupted extraction?): extracting again", flush=True)
        return None
    recorded = marker.get("files")
    if not isinstance(recorded, dict):
        print(f"{raw} was extracted by an older kit that did not record its files, so a changed or damaged file "
              f"cannot be noticed: extracting again", flush=True)
        return None
    if identity is not None and marker.get("source") != identity:
        print(f"{raw} was extracted from {marker.get('source', {}).get('path')} (as it was then): extracting "
              f"{identity['path']} instead", flush=True)
        return None
    changes = manifest_changes(recorded, file_manifest(raw))
    if changes:
        print(f"{raw} changed since it was extracted ({changes}): extracting again", flush=True)
        return None
    return marker


def _remove_leftovers(raw: Path) -> None:
    """What a killed extraction left beside raw/: its temporary folder (if its process is gone), and the previous
    raw/ moved aside in the middle of the final swap (put back if raw/ is missing, else removed)."""
    for leftover, freed in remove_stale_temporaries(raw.parent, final_name=raw.name):
        print(f"removed {leftover} ({gigabytes(freed)}), left by an interrupted extraction", flush=True)
    old = raw.parent / f".{raw.name}.old"
    if old.is_dir() and not raw.exists():
        print(f"putting back {raw} from {old}: an extraction was interrupted while replacing it", flush=True)
        old.rename(raw)
    elif old.exists():
        print(f"removing {old}, left by an interrupted extraction", flush=True)
        shutil.rmtree(old, ignore_errors=True)


def _local_source(cfg: Config, source: str | None) -> Path | None:
    """--from, else the Kaggle Notebook mount, else a finished earlier API download, else None."""
    if source:
        path = Path(source).expanduser()
        if not path.exists():
            raise KitError(f"--from {source}: no such file or folder: pass the competition zip or a folder holding "
                           f"{', '.join(REQUIRED)}")
        return path
    for mounted in kit_paths.kaggle_input_dirs(cfg):
        found = notebook_source(mounted, cfg.competition.slug)
        if found:
            print(f"found the competition mounted at {found} (Kaggle Notebook, read only): using it, no download",
                  flush=True)
            return found
    downloaded = kit_paths.download_dir(cfg) / f"{cfg.competition.slug}.zip"
    if kaggle_api.download_incomplete_reason(downloaded) is None:
        return downloaded
    return None


def run(cfg: Config, source: str | None = None, api: Any = None) -> Path:
    """Make raw_dir(cfg) hold the verified competition files; return it. `api`: a KaggleApi (tests)."""
    raw = kit_paths.raw_dir(cfg)
    if cfg.competition.layout == "folder":
        return _folder_layout(cfg, raw, source)
    require_writable(raw.parent, DATA_DIR_KEY)  # before a download of gigabytes, not after
    with writing(raw.parent, DATA_DIR_KEY):
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
    how = "linked (read in place, not copied)" if extracted_folders(path) else "extracted"
    print(f"verified and {how} {counts['train']:,} train and {counts['test']:,} test images and {SAMPLE} "
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
    if source.is_dir() and extracted_folders(source):
        return link_extracted(source, raw)
    label = source.name
    identity = source_identity(source)
    with writing(raw, DATA_DIR_KEY, also=_KEPT), atomic_path(raw) as tmp:
        tmp.mkdir()
        scratch = tmp / ".kit-scratch"
        scratch.mkdir()
        members = _gather(source, scratch, raw)
        train = _safe_members(members["train.zip"], "train", label)
        test = _safe_members(members["test.zip"], "test", label)
        _check_sample_ids(members[SAMPLE], [info.filename for info in test], label)
        needed = sum(info.file_size for info in train + test) + members[SAMPLE].stat().st_size
        require_free_space(raw.parent, needed + EXTRACT_MARGIN, f"extracting {label}", _NO_SPACE)
        counts = {"train": _extract(members["train.zip"], train, tmp, "train", label),
                  "test": _extract(members["test.zip"], test, tmp, "test", label)}
        shutil.copyfile(members[SAMPLE], tmp / SAMPLE)
        shutil.rmtree(scratch)
        marker = {"source": identity, "counts": counts,
                  "extracted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "files": file_manifest(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, separators=(",", ":")) + "\n")
    return counts


def link_extracted(source: Path, raw: Path) -> dict:
    """raw/ with symbolic links to `source`'s extracted train/, test/ and sample csv (read in place, never written),
    checked like an extraction (sample ids == test ids, files present) and marked complete; return counts."""
    folders, identity = extracted_folders(source), source_identity(source)
    with writing(raw, DATA_DIR_KEY, also=_KEPT), atomic_path(raw) as tmp:
        tmp.mkdir()
        for name, folder in folders.items():
            (tmp / name).symlink_to(folder.resolve(), target_is_directory=True)
        (tmp / SAMPLE).symlink_to((source / SAMPLE).resolve())
        counts = {name: count_files(tmp / name) for name in folders}
        empty = [name for name, count in counts.items() if not count]
        if empty:
            raise KitError(f"{source}: {' and '.join(f'{name}/' for name in empty)} holds no files: attach the whole "
                           f"competition, or pass --from the competition zip")
        with os.scandir(tmp / "test") as entries:
            _check_sample_ids(tmp / SAMPLE, [entry.name for entry in entries if entry.is_file()], source.name,
                              "test/")
        marker = {"source": identity, "counts": counts, "linked": True,
                  "extracted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "files": file_manifest(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, separators=(",", ":")) + "\n")
    return counts


def _gather(source: Path, scratch: Path, raw: Path) -> dict[str, Path]:
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
            # scratch copies of the inner zips, then what they hold (about as big: JPEGs do not compress)
            needed = sum(outer.getinfo(name).file_size for name in REQUIRED) * 2
            require_free_space(raw.parent, needed + EXTRACT_MARGIN, f"extracting {source.name}", _NO_SPACE)
            for name in REQUIRED:  # each copy reads to the end, so zipfile checks its CRC
                _copy(outer, outer.getinfo(name), scratch / name, source, progress=True)
    except ZIP_ERRORS as exc:
        raise KitError(f"{source} is damaged ({exc}): download the competition again with `make download`") from None
    except OSError as exc:
        if not exc.filename or Path(exc.filename) != source:
            raise  # writing the scratch copy: `writing` names the target folder
        raise KitError(f"cannot read {source} ({exc}): check that file and its disk") from None
    return {name: scratch / name for name in REQUIRED}


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, source: Path, progress: bool = False) -> None:
    """Copy one member out (reading it to the end, so zipfile checks its CRC). A failed read names the source;
    a failed write is an OSError (turned into a message about the target folder by `writing`)."""
    bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"reading {info.filename}", leave=False,
               disable=not progress)
    with zf.open(info) as src, open(target, "wb") as out, bar:
        while True:
            try:
                chunk = src.read(1 << 20)
            except OSError as exc:
                raise KitError(f"cannot read {source} ({exc}): check that disk, or copy the file elsewhere and "
                               f"pass it with --from") from None
            if not chunk:
                break
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
    except OSError as exc:
        raise KitError(f"cannot read {inner_zip} ({exc}): check that file and its disk") from None
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


def _check_sample_ids(sample_csv: Path, test: list[str], label: str, where: str = "test.zip") -> None:
    """sample_submission.csv must list exactly the test images' ids (a submission is built from them)."""
    import pandas as pd

    try:
        ids = pd.read_csv(sample_csv, dtype=str)["id"].str.strip()
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise KitError(f"{SAMPLE} in {label} is not a CSV with an id column ({type(exc).__name__}): download the "
                       f"competition again") from None
    sample_ids = set(ids)
    test_ids = {PurePosixPath(name).stem for name in test}
    if sample_ids != test_ids or len(ids) != len(sample_ids):
        only_csv = sorted(sample_ids - test_ids)[:3]
        only_test = sorted(test_ids - sample_ids)[:3]
        raise KitError(f"{SAMPLE} in {label} lists {len(ids)} ids ({len(sample_ids)} distinct) but {where} holds "
                       f"{len(test_ids)} images; e.g. only in the csv: {only_csv}, only in {where}: {only_test}: "
                       f"download the competition again")


def _extract(inner_zip: Path, files: list[zipfile.ZipInfo], dest: Path, folder: str, label: str) -> int:
    """Extract the checked members (zipfile checks each CRC) and confirm every one arrived."""
    try:
        (dest / folder).mkdir()
        with zipfile.ZipFile(inner_zip) as zf:
            for info in tqdm(files, desc=f"extracting {folder}", unit="file", leave=False):
                _copy(zf, info, dest / folder / PurePosixPath(info.filename).name, inner_zip)
    except ZIP_ERRORS as exc:
        raise KitError(f"{inner_zip.name} in {label} is damaged ({exc}): download the competition again "
                       f"with `make download`") from None
    count = count_files(dest / folder)
    if count != len(files):
        raise KitError(f"extracted {count} files from {inner_zip.name} in {label} but it lists {len(files)} "
                       f"(duplicate names?): download the competition again")
    return count
