"""The data stage: list, check and split the competition's images into the index the other stages read
(through kit/data/dataset.py, which owns the index's file names).

    python -m kit data --config configs/dogs-vs-cats-redux.yaml      (make data; `make train` runs it first)

Writes into `paths.index_dir(cfg)` (each file atomically): train.csv (path, label, class_name, split; good
images only, `path` is what to load), test.csv (id, path; id order), classes.json, quarantine.csv (path,
reason: train images left out, never deleted), split-seed<seed>-val<fraction>.csv, checks.csv (the image
check cache), converted/ (PNG copies of formats TensorFlow cannot decode), index.json, config.yaml and
versions.json. An unreadable TEST image stops the stage before anything is written: every id needs a
prediction. The index folder is checked to be writable before any image is; a write that fails (disk full,
read-only) is one line naming the folder and paths.data_dir, and the previous index stays complete.
"""
from __future__ import annotations

import json
from collections import Counter
import time
from pathlib import Path

import pandas as pd

from kit import paths
from kit.config import Config
from kit.provenance import save_provenance
from kit.errors import KitError
from kit.fsutil import atomic_path, require_writable, write_text_atomic, writing
from kit.data.images import check_images
from kit.data.dataset import CLASSES_FILE, META_FILE, SAMPLE_SUBMISSION
from kit.data.listing import Listing, list_dataset, load_or_make_split

CHECKS_FILE = "checks.csv"
CONVERTED_DIR = "converted"
DATA_DIR_KEY = "paths.data_dir"  # the setting that moves the index (the fix named when it cannot be written)


def run(cfg: Config) -> Path:
    """Build the dataset index for `cfg`; return its folder. Prints a summary."""
    raw, out = paths.raw_dir(cfg), paths.index_dir(cfg)
    started = time.monotonic()
    listing = list_dataset(cfg, raw)
    require_writable(out, DATA_DIR_KEY)  # before checking every image, not after
    test_paths = [] if listing.test is None else list(listing.test["path"])
    with writing(out, DATA_DIR_KEY):
        checks = check_images(list(listing.train["path"]) + test_paths, cfg.data.workers, out / CHECKS_FILE,
                              out / CONVERTED_DIR).set_index("path")
    test = _checked_test(listing.test, checks, _restore_hint(cfg))
    _match_sample_submission(raw / SAMPLE_SUBMISSION, test, _restore_hint(cfg))
    split, split_path = load_or_make_split(listing.train, out, cfg.data.seed, cfg.data.val_fraction)
    train, quarantine = _good_and_quarantined(listing, checks, split)
    _require_every_class(cfg, listing.classes, train, raw)
    _require_validation(cfg, train, raw)
    with writing(out, DATA_DIR_KEY):
        _write_index(cfg, out, listing.classes, train, test, quarantine, split_path)
    print(summary(cfg, listing, train, test, quarantine, out) + f" in {time.monotonic() - started:.1f} s", flush=True)
    return out


def _restore_hint(cfg: Config) -> str:
    """The command that really restores a damaged raw file: re-extraction (download notices the change) for a
    competition; for the user's own folder, nothing kit can run."""
    if cfg.competition.layout == "folder":
        return f"replace or remove it in {cfg.competition.folder}"
    return "re-extract the competition with `make download` (it notices changed files)"


def _checked_test(test: pd.DataFrame | None, checks: pd.DataFrame, hint: str) -> pd.DataFrame | None:
    """Test (id, load path); KitError naming the first unreadable test image."""
    if test is None:
        return None
    result = checks.loc[test["path"]]
    bad = result[~result["ok"]]
    if not bad.empty:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise KitError(f"test image {bad.index[0]} cannot be read: {bad['reason'].iloc[0]}{more}; every test id "
                       f"needs a prediction: {hint}; index left as it was")
    return pd.DataFrame({"id": test["id"].to_numpy(), "path": result["load_path"].to_numpy()})


def _match_sample_submission(sample: Path, test: pd.DataFrame | None, hint: str) -> None:
    """The test ids must be exactly the ids Kaggle expects, when sample_submission.csv is there."""
    if not sample.is_file():
        return
    try:
        expected = pd.read_csv(sample, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise KitError(f"{sample} is not a readable CSV ({type(error).__name__}): {hint}") from None
    if "id" not in expected.columns:
        raise KitError(f"{sample} has no 'id' column: {hint}")
    wanted = set(expected["id"].str.strip())
    have = set() if test is None else {str(i) for i in test["id"]}
    if wanted != have:
        missing, extra = sorted(wanted - have), sorted(have - wanted)
        raise KitError(f"test images do not match {sample.name}: {len(missing)} ids missing from test/"
                       f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(extra)} not in it"
                       f"{' (e.g. ' + extra[0] + ')' if extra else ''}: {hint}")


def _good_and_quarantined(listing: Listing, checks: pd.DataFrame,
                          split: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train.csv rows (good images, with split) and quarantine.csv rows (unlabelled + failed checks)."""
    train = listing.train.merge(split.rename(columns={"path": "rel"}), on="rel", how="left", validate="1:1")
    result = checks.loc[train["path"]]
    ok = result["ok"].to_numpy()
    failed = pd.DataFrame({"path": train["path"][~ok], "reason": result["reason"].to_numpy()[~ok]})
    quarantine = pd.concat([listing.unlabelled, failed], ignore_index=True)
    good = train[ok].assign(path=result["load_path"].to_numpy()[ok])
    return good[["path", "label", "class_name", "split"]].reset_index(drop=True), quarantine


def _require_every_class(cfg: Config, classes: list[str], train: pd.DataFrame, raw: Path) -> None:
    empty = [name for label, name in enumerate(classes) if not (train["label"] == label).any()]
    if not empty:
        return
    if cfg.competition.layout == "folder":
        where, fix = raw / empty[0], "add readable images to it (see quarantine.csv), or remove the folder"
    else:
        where = raw / "train"
        fix = (f"files named {empty[0]}.<n>.jpg are needed (see quarantine.csv): re-extract with `make download`, "
               "or check competition.classes")
    raise KitError(f"class {empty[0]!r} has no readable training images in {where}: {fix}")


def _require_validation(cfg: Config, train: pd.DataFrame, raw: Path) -> None:
    """A validation split with no readable image would fail much later, in training, with a confusing message."""
    if cfg.data.val_fraction > 0 and not (train["split"] == "val").any():
        raise KitError(f"no readable validation images in {raw} with data.val_fraction={cfg.data.val_fraction:g}: "
                       "each class needs at least 2 readable images (see quarantine.csv): add images")


def _write_index(cfg: Config, out: Path, classes: list[str], train: pd.DataFrame, test: pd.DataFrame | None,
                 quarantine: pd.DataFrame, split_path: Path) -> None:
    _write_csv(out / "train.csv", train)
    if test is not None:
        _write_csv(out / "test.csv", test)
    elif (out / "test.csv").exists():
        (out / "test.csv").unlink()  # a stale test.csv would be predicted on
    _write_csv(out / "quarantine.csv", quarantine)
    write_text_atomic(out / CLASSES_FILE, json.dumps(classes, indent=2) + "\n")
    save_provenance(cfg, out)
    meta = {"layout": cfg.competition.layout, "raw_dir": str(paths.raw_dir(cfg).absolute()), "classes": classes,
            "seed": cfg.data.seed, "val_fraction": cfg.data.val_fraction, "split_file": split_path.name,
            "has_test": test is not None, "counts": {"train": int((train["split"] == "train").sum()),
                                                     "val": int((train["split"] == "val").sum()),
                                                     "test": 0 if test is None else len(test),
                                                     "quarantined": len(quarantine)}}
    write_text_atomic(out / META_FILE, json.dumps(meta, indent=2) + "\n")  # last: marks a complete index


def _write_csv(final: Path, frame: pd.DataFrame) -> None:
    with atomic_path(final) as tmp:
        frame.to_csv(tmp, index=False)


_SHORT_REASONS = {"empty file": "empty file", "truncated image data": "truncated", "not an image": "not an image",
                  "file name does not start with a known class": "unknown class name", "unreadable": "unreadable"}


def _short_reason(reason: str) -> str:
    head = reason.split(" (")[0].split(":")[0]
    return _SHORT_REASONS.get(head, head)


def summary(cfg: Config, listing: Listing, train: pd.DataFrame, test: pd.DataFrame | None,
            quarantine: pd.DataFrame, out: Path) -> str:
    """What was indexed: counts per class and split, test count, quarantine breakdown, ignored files."""
    lines = [f"indexed {paths.raw_dir(cfg)} ({cfg.competition.layout}, {len(listing.classes)} classes):"]
    width = max(len(name) for name in listing.classes)
    for label, name in enumerate(listing.classes):
        rows = train[train["label"] == label]
        lines.append(f"  {name:<{width}}  train {(rows['split'] == 'train').sum():>7,}  "
                     f"val {(rows['split'] == 'val').sum():>6,}")
    lines.append("  test: " + ("no test folder" if test is None else f"{len(test):,} images"))
    listed = len(listing.train) + len(listing.unlabelled)
    counts = Counter(_short_reason(r) for r in quarantine["reason"])
    breakdown = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    line = f"quarantined {len(quarantine):,} of {listed:,} train images"
    if len(quarantine):
        line += f" ({breakdown}): {out / 'quarantine.csv'} — left out of training, not deleted"
    lines.append(line)
    if listing.ignored:
        lines.append(f"ignored {len(listing.ignored):,} files that are not images or are hidden "
                     f"(e.g. {listing.ignored[0]})")
    lines.append(f"index written to {out}")
    return "\n".join(lines)
