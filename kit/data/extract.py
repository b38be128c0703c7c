"""The raw folder: a competition zip (or mounted folder) extracted, verified and recorded, or linked in place.

    from kit.data.extract import extract_competition
    counts = extract_competition(Path("dogs-vs-cats-redux-kernels-edition.zip"), raw)   # {"train": n, "test": m}

Extraction goes to a temporary folder that replaces raw/ only once everything is verified (member names,
CRCs, counts, sample ids == test ids); raw/.kit-complete.json then records the source, the counts and every
extracted file's size and mtime (kit/data/raw_marker.py tells whether raw/ is still what was extracted). Already
extracted train/ and test/ folders are linked, not copied. A write that fails (disk full, read-only or
misplaced paths.data_dir) is a one-line KitError naming the folder and the fix; the partial extraction is
removed and the previous raw/ stays. Used by the download stage (kit/data/download.py).
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from kit.data import kaggle_api
from kit.data.raw_marker import SAMPLE, count_files, file_manifest, write_marker
from kit.errors import KitError
from kit.fsutil import atomic_path, require_free_space, writing

REQUIRED = ("train.zip", "test.zip", SAMPLE)
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
        write_marker(tmp, identity, counts, file_manifest(tmp))
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
        manifest = file_manifest(tmp)  # one listing of each folder gives the counts, the ids and the marker
        counts = {name: sum(1 for path in manifest if path.startswith(f"{name}/")) for name in folders}
        empty = [name for name, count in counts.items() if not count]
        if empty:
            raise KitError(f"{source}: {' and '.join(f'{name}/' for name in empty)} holds no files: attach the whole "
                           f"competition, or pass --from the competition zip")
        _check_sample_ids(tmp / SAMPLE, [path[len("test/"):] for path in manifest if path.startswith("test/")],
                          source.name, "test/")
        write_marker(tmp, identity, counts, manifest, linked=True)
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
