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

The extraction and its checks live in kit/data/extract.py, the completion marker in kit/data/raw_marker.py.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from kit import paths as kit_paths
from kit.config import Config
from kit.data import kaggle_api
from kit.data.extract import DATA_DIR_KEY, REQUIRED, extract_competition, extracted_folders, source_identity
from kit.data.raw_marker import MARKER, SAMPLE, complete_marker  # noqa: F401  (MARKER: the tests read it here)
from kit.errors import KitError
from kit.fsutil import gigabytes, remove_stale_temporaries, require_writable, writing


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
