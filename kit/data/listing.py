"""List a competition's images, label them, and split train/val once. Part of the data stage:

    python -m kit data --config configs/dogs-vs-cats-redux.yaml

Two layouts. kaggle-flat: `train/<class>.<n>.<ext>` (classes from `competition.classes`, label = index,
so for Dogs vs. Cats dog = 1 = the submission's `label`) and `test/<id>.<ext>` with integer ids.
folder: one sub-folder per class (label = index in sorted names), optionally `test/` (ids = file stems);
at least two class folders holding images.

The split is stratified by class, seeded, computed over every listed train image (before bad images
are left out, so fixing or breaking one file never moves others between train and val), and written
once to `split-seed<seed>-val<fraction>.csv`; later runs reuse it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import Config
from kit.errors import KitError
from kit.fsutil import atomic_path, writing

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEST_FOLDER = "test"


@dataclass
class Listing:
    """Every file found, before any image is opened."""
    classes: list[str]
    train: pd.DataFrame  # rel (posix, relative to raw dir), path (absolute), label, class_name
    unlabelled: pd.DataFrame  # path, reason: train files whose class cannot be told from the name
    test: pd.DataFrame | None  # id, path (absolute), sorted by id; None when there is no test folder
    ignored: list[str]  # files that are not images (folder layout) or hidden files: listed, not used


def list_dataset(cfg: Config, raw: Path) -> Listing:
    """List `raw` in the layout `cfg.competition.layout` says; KitError if there is nothing to train on."""
    if not raw.is_dir():
        hint = ("set competition.folder to a folder with one sub-folder per class"
                if cfg.competition.layout == "folder" else "run `make download` first")
        raise KitError(f"data folder {raw} not found: {hint}")
    if cfg.competition.layout == "kaggle-flat":
        listing = _list_kaggle_flat(raw, list(cfg.competition.classes))
    elif cfg.competition.layout == "folder":
        listing = _list_folder(raw)
    else:
        raise KitError(f"competition.layout is {cfg.competition.layout!r}: use kaggle-flat or folder")
    if listing.train.empty:
        raise KitError(f"no training images found in {raw} (layout {cfg.competition.layout}): "
                       "check competition.layout and the folder, or run `make download`")
    if len(listing.classes) < 2:  # kaggle-flat: competition.classes is checked when the config loads
        found = f"only {listing.classes[0]!r}" if listing.classes else "none"
        raise KitError(f"{raw} has one class folder with images ({found}): a dataset needs at least two classes, "
                       f"one sub-folder of images each (e.g. {raw}/cat/, {raw}/dog/)")
    return listing


def _visible_files(folder: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """(files, hidden files) under `folder`, sorted; hidden = any path part starting with '.'."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.is_file())
    hidden = [p for p in files if any(part.startswith(".") for part in p.relative_to(folder).parts)]
    hidden_set = set(hidden)
    return [p for p in files if p not in hidden_set], hidden


def _list_kaggle_flat(raw: Path, classes: list[str]) -> Listing:
    train_dir = raw / "train"
    if not train_dir.is_dir():
        raise KitError(f"{train_dir} not found: run `make download` (or check paths.data_dir)")
    files, hidden = _visible_files(train_dir, recursive=False)
    lookup = {name.lower(): label for label, name in enumerate(classes)}
    rows, unlabelled = [], []
    for path in files:
        label = lookup.get(path.name.split(".", 1)[0].lower())
        if label is None:
            reason = f"file name does not start with a known class ({', '.join(classes)})"
            unlabelled.append({"path": str(path.absolute()), "reason": reason})
        else:
            rows.append(_train_row(raw, path, label, classes[label]))
    ignored = [str(p) for p in hidden]
    test = None
    if (raw / TEST_FOLDER).is_dir():
        test = _list_test(raw / TEST_FOLDER, _int_id, recursive=False, images_only=False, ignored=ignored)
    return Listing(classes, _train_frame(rows), _unlabelled_frame(unlabelled), test, ignored)


def _list_folder(raw: Path) -> Listing:
    files, hidden = _visible_files(raw, recursive=True)
    ignored = [str(p) for p in hidden]
    by_class: dict[str, list[Path]] = {}
    for path in files:
        parts = path.relative_to(raw).parts
        if len(parts) < 2 or parts[0] == TEST_FOLDER:
            if len(parts) < 2:
                ignored.append(str(path))  # top-level files: sample_submission.csv, README, ...
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored.append(str(path))
            continue
        by_class.setdefault(parts[0], []).append(path)
    classes = sorted(by_class)
    rows = [_train_row(raw, path, label, name) for label, name in enumerate(classes) for path in by_class[name]]
    test = None
    if (raw / TEST_FOLDER).is_dir():
        test = _list_test(raw / TEST_FOLDER, lambda p: p.stem, recursive=True, images_only=True, ignored=ignored)
    return Listing(classes, _train_frame(rows), _unlabelled_frame([]), test, ignored)


def _int_id(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        raise KitError(f"test file {path} is not named <id>.jpg with an integer id: "
                       "remove it, or re-extract the competition with `make download`") from None


def _list_test(test_dir: Path, id_of, recursive: bool, images_only: bool, ignored: list[str]) -> pd.DataFrame:
    """Test files as (id, path) sorted by id; hidden and (if `images_only`) non-image files go to `ignored`."""
    files, hidden = _visible_files(test_dir, recursive=recursive)
    ignored += [str(p) for p in hidden]
    if images_only:
        ignored += [str(p) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        files = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    frame = pd.DataFrame({"id": [id_of(p) for p in files], "path": [str(p.absolute()) for p in files]})
    duplicated = frame[frame["id"].duplicated(keep=False)]
    if not duplicated.empty:
        raise KitError(f"test files share an id ({', '.join(duplicated['path'].head(2))}): "
                       "every test id must be one file; remove or rename the extra one")
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def _train_row(raw: Path, path: Path, label: int, class_name: str) -> dict:
    return {"rel": path.relative_to(raw).as_posix(), "path": str(path.absolute()), "label": label,
            "class_name": class_name}


def _train_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["rel", "path", "label", "class_name"]).astype({"label": int})


def _unlabelled_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["path", "reason"])


def split_file(index_dir: Path, seed: int, val_fraction: float) -> Path:
    return index_dir / f"split-seed{seed}-val{val_fraction:g}.csv"


def make_split(train: pd.DataFrame, seed: int, val_fraction: float) -> pd.DataFrame:
    """Stratified split of `train` (rel, label): columns path (= rel), split in {train, val}, sorted by path.

    Per class, round(n * fraction) images go to val: at least one when the class has two or more and the
    fraction is above zero, so every class is validated.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise KitError(f"data.val_fraction is {val_fraction}: use a fraction in [0, 1), e.g. 0.2")
    rng = np.random.default_rng(seed)
    parts = []
    for label in sorted(train["label"].unique()):
        rels = np.array(sorted(train.loc[train["label"] == label, "rel"]), dtype=object)
        n_val = round(len(rels) * val_fraction)
        if val_fraction > 0 and len(rels) >= 2:
            n_val = min(max(n_val, 1), len(rels) - 1)
        is_val = np.zeros(len(rels), dtype=bool)
        is_val[rng.permutation(len(rels))[:n_val]] = True
        parts.append(pd.DataFrame({"path": rels, "split": np.where(is_val, "val", "train")}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["path", "split"])
    return frame.sort_values("path").reset_index(drop=True)


def load_or_make_split(train: pd.DataFrame, index_dir: Path, seed: int,
                       val_fraction: float) -> tuple[pd.DataFrame, Path]:
    """The stored split for (seed, fraction) if there is one (it must cover exactly these files), else a new one."""
    path = split_file(index_dir, seed, val_fraction)
    if not path.is_file():
        split = make_split(train, seed, val_fraction)
        with writing(path, "paths.data_dir"), atomic_path(path) as tmp:
            split.to_csv(tmp, index=False)
        return split, path
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(split.columns) != ["path", "split"] or not split["split"].isin(["train", "val"]).all():
        raise KitError(f"split file {path} is damaged (want columns path,split with train/val): "
                       "delete it to split again")
    stored, listed = set(split["path"]), set(train["rel"])
    if stored != listed:
        raise KitError(f"the train images changed since {path} was written ({len(listed - stored)} added, "
                       f"{len(stored - listed)} removed): delete that file to split again "
                       "(val scores of earlier runs are then not comparable), or restore the files")
    return split, path
