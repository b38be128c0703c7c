"""Check every image once, in parallel: can the pipeline read it? Run as part of the data stage:

    python -m kit data --config configs/dogs-vs-cats-redux.yaml

Each file is opened with Pillow and fully decoded (JPEGs at a reduced DCT scale, which still parses
every byte, so a truncated file is found at a fraction of the cost). Results are cached in a CSV keyed
by path + size + mtime_ns, so a rerun only checks new or changed files.

The pipeline decodes with `tf.io.decode_image`, which reads JPEG, PNG, GIF and BMP by content (a PNG
named .jpg, grayscale, RGBA and CMYK JPEGs all load). Anything else Pillow can read (WebP, TIFF, ...)
gets an RGB PNG copy in `converted_dir` and `load_path` points there. Originals are never touched.

TensorFlow ignores EXIF orientation, so a phone photo taken upright (orientation 6) would load on its side.
The orientation is read from the header during the check (no extra decode for the photos without one);
a photo whose orientation is not 1 gets a copy turned upright as PIL.ImageOps.exif_transpose does (a JPEG
at quality 95 for a JPEG: a lossless PNG of a 12 MP photo is ~19 MB and 1-2 s to write), and `load_path`
points there: training, the pixel cache, prediction and export all read the upright image.
A copy that cannot be written (disk full, read-only folder) is a KitError naming the folder: it says
nothing about the image, so it is never reported as a bad one.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from kit.errors import KitError
from kit.fsutil import atomic_path, write_error

# Formats tf.io.decode_image reads as 3 channels (checked with TF 2.21). MPO is a camera JPEG.
# TF also reads still WebP, but not animated WebP, so WebP is converted like the rest.
_TF_NATIVE = {"JPEG", "MPO", "PNG", "GIF"}
_TF_NATIVE_BMP_MODES = {"RGB", "RGBA"}  # TF fails on 1-bit BMPs; low-bit BMPs are rare, so convert them
_DRAFT_SIZE = (64, 64)  # JPEG: decode at the smallest DCT scale that is at least this big
# Part of the cache key: results of an older check are not reused. 2: EXIF orientation applied.
CHECK_VERSION = 2
_CACHE_COLUMNS = ["path", "size", "mtime_ns", "check_version", "ok", "reason", "load_path"]
CONVERTED_SETTING = "paths.data_dir"  # what moves check_images' converted_dir (the data stage's index folder)
_ORIENTATION = 0x0112  # the EXIF tag; 1 = upright, 2-8 = flipped and/or rotated
RESULT_COLUMNS = ["path", "ok", "reason", "load_path"]


def check_images(paths: list[Path], workers: int, cache_file: Path, converted_dir: Path) -> pd.DataFrame:
    """Check `paths` (cached by path + size + mtime_ns); return columns path, ok, reason, load_path.

    `path` is the absolute path; `load_path` is what the pipeline should read (the original, or a
    converted PNG copy under `converted_dir`); `reason` is '' for good images.
    """
    keyed = [_file_key(Path(p)) for p in paths]
    cached = _read_cache(Path(cache_file))
    results, todo = {}, []
    for key in keyed:
        hit = cached.get(key)
        if hit is not None and (not hit["load_path"] or Path(hit["load_path"]).exists()):
            results[key[0]] = hit
        else:
            todo.append(key)
    for key, (ok, reason, load_path) in zip(todo, _check_all(todo, workers, Path(converted_dir))):
        results[key[0]] = {"path": key[0], "size": key[1], "mtime_ns": key[2], "check_version": CHECK_VERSION,
                           "ok": ok, "reason": reason, "load_path": load_path}
    if todo:
        _write_cache(Path(cache_file), cached, results)
    frame = pd.DataFrame([results[key[0]] for key in keyed], columns=_CACHE_COLUMNS)
    return frame[RESULT_COLUMNS].astype({"ok": bool, "reason": str, "load_path": str}).reset_index(drop=True)


def check_image(path: str, converted_dir: str, setting: str = "TMPDIR") -> tuple[bool, str, str]:
    """Check one file: (ok, reason, load_path). Never raises for a bad file.

    load_path is `path` itself, or a copy in `converted_dir`: an RGB PNG of a format TensorFlow cannot
    decode, and/or the image turned upright when its EXIF orientation is not 1. A copy that cannot be
    written raises a KitError (the folder's fault, not the image's) naming `setting`, what moves
    `converted_dir` (the data stage's is under paths.data_dir; prediction's is a temporary folder).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            return False, "empty file (0 bytes)", ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF, large images: still readable
            with Image.open(path) as image:
                fmt, mode = image.format, image.mode
                image.draft("RGB", _DRAFT_SIZE)
                image.load()
                orientation = _orientation(image)
            native = fmt in _TF_NATIVE or (fmt == "BMP" and mode in _TF_NATIVE_BMP_MODES)
            if native and orientation == 1:
                return True, "", path
            return True, "", str(_converted_copy(path, Path(converted_dir), fmt, orientation, setting))
    except KitError:
        raise
    except UnidentifiedImageError:
        return False, "not an image (cannot identify format)", ""
    except Exception as error:  # noqa: BLE001 - any decoder failure means "cannot be read"
        return False, _reason(error), ""


def _orientation(image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when there is none or it is damaged. Header only."""
    if image.format in ("JPEG", "MPO") and "exif" not in image.info:
        return 1  # no APP1 EXIF segment: nothing to parse
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: treat as upright, the pixels are still readable
        return 1
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def _reason(error: Exception) -> str:
    message = " ".join(str(error).split())
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return "truncated image data"
    return f"unreadable: {type(error).__name__}: {message}"[:300]


def _converted_copy(path: str, converted_dir: Path, fmt: str, orientation: int, setting: str) -> Path:
    """An RGB copy of `path` that TensorFlow reads upright, named after its path, size and mtime (a changed file
    gets a new copy) and the orientation applied: PNG (lossless), or a quality-95 JPEG for a turned JPEG."""
    from PIL import Image, ImageOps

    stat = os.stat(path)
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}" + (f"|exif{orientation}" if orientation != 1 else "")
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    as_jpeg = fmt in ("JPEG", "MPO") and orientation != 1
    final = converted_dir / f"{Path(path).stem}-{digest}.{'jpg' if as_jpeg else 'png'}"
    if final.exists():
        return final
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image) if orientation != 1 else image
        rgb = upright.convert("RGB")  # decodes: a failure here is the image's (caught by check_image)
    try:
        with atomic_path(final) as tmp:
            if as_jpeg:
                rgb.save(tmp, format="JPEG", quality=95)
            else:
                rgb.save(tmp, format="PNG", compress_level=1)
    except OSError as error:
        if error.errno is None:
            raise  # an encoder error, not the disk
        raise write_error(converted_dir, error, setting) from None
    return final


def _check_star(args: tuple[str, str, str]) -> tuple[bool, str, str]:
    return check_image(*args)


def _check_all(todo: list[tuple[str, int, int]], workers: int, converted_dir: Path) -> list[tuple[bool, str, str]]:
    """Check the files in `todo` with a pool of `workers` processes (0: one per core) and a progress bar."""
    if not todo:
        return []
    jobs = [(key[0], str(converted_dir), CONVERTED_SETTING) for key in todo]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=len(jobs), desc="checking images", unit="img", smoothing=0.1)
    with bar:
        if workers <= 1 or len(jobs) < 32:  # a pool costs more than it saves on a handful of files
            return [_tick(bar, check_image(*job)) for job in jobs]
        # forkserver: forking a process that already runs TensorFlow's threads can deadlock.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["kit.data.images"])  # imported once in the server, not per worker
        chunksize = max(1, min(64, len(jobs) // (workers * 8)))
        with context.Pool(workers) as pool:
            return [_tick(bar, result) for result in pool.imap(_check_star, jobs, chunksize=chunksize)]


def _tick(bar: tqdm, result: tuple[bool, str, str]) -> tuple[bool, str, str]:
    bar.update(1)
    return result


def _file_key(path: Path) -> tuple[str, int, int]:
    path = path.absolute()
    try:
        stat = path.stat()
    except OSError:  # missing or unreadable: check_image reports why
        return str(path), -1, -1
    return str(path), stat.st_size, stat.st_mtime_ns


def _read_cache(cache_file: Path) -> dict[tuple[str, int, int], dict]:
    if not cache_file.is_file():
        return {}
    try:
        frame = pd.read_csv(cache_file, dtype={"path": str, "reason": str, "load_path": str},
                            keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # a damaged or unreadable cache only costs a re-check
    if list(frame.columns) != _CACHE_COLUMNS:
        return {}  # an older check (no check_version): every file is checked again
    frame = frame[frame["check_version"].astype(str) == str(CHECK_VERSION)].copy()
    frame["ok"] = frame["ok"].astype(str) == "True"
    return {(row["path"], int(row["size"]), int(row["mtime_ns"])): row for row in frame.to_dict("records")}


def _write_cache(cache_file: Path, cached: dict, results: dict) -> None:
    """Keep entries for files not checked in this call (train and test may share one cache)."""
    merged = {key[0]: row for key, row in cached.items()}
    merged.update(results)
    frame = pd.DataFrame(list(merged.values()), columns=_CACHE_COLUMNS).sort_values("path")
    with atomic_path(cache_file) as tmp:
        frame.to_csv(tmp, index=False)
