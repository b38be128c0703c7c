"""The dataset index as the other stages read it: train/val/test frames, classes, quarantine. Reading never writes.

    from kit.data.dataset import load_index
    index = load_index(cfg)           # index.train, index.val (path, label, class_name), index.test (id, path)

The data stage (kit/data/index.py, `make data`) writes the index; this module owns its file names and
reads it. An index that is missing, or was built for another layout, class list, seed or validation
fraction, is a KitError naming `make data`: the CLI runs the data stage first where a stage needs it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kit import paths
from kit.config import Config
from kit.errors import KitError

META_FILE = "index.json"  # written last by the data stage: marks a complete index
SAMPLE_SUBMISSION = "sample_submission.csv"
CLASSES_FILE = "classes.json"  # the index's class names, label order (a run keeps its own copy: kit/runs.py)


@dataclass
class DatasetIndex:
    classes: list[str]  # label order
    train: pd.DataFrame  # path, label, class_name
    val: pd.DataFrame  # path, label, class_name
    test: pd.DataFrame | None  # id, path; None when the data has no test folder
    quarantine: pd.DataFrame  # path, reason
    sample_submission: Path | None
    indexed_paths: frozenset = frozenset()  # every good train/val image, before data.limit_per_class


def load_index(cfg: Config) -> DatasetIndex:
    """The index for `cfg`, limited to `data.limit_per_class` per class; a KitError if cfg's split differs."""
    out = paths.index_dir(cfg)
    meta = _read_meta(out)
    if meta is None:
        raise KitError(f"no dataset index in {out}: run `make data` (or `make download` first)")
    if _stale(meta, cfg):  # a read never writes: the CLI runs the data stage first when this is so
        raise KitError(f"the index in {out} was built for {_describe(meta)}, not {_describe(_wanted(cfg))}: "
                       "run `make data` with this config (image checks are cached)")
    train = pd.read_csv(out / "train.csv", dtype={"path": str, "class_name": str, "split": str})
    test = None
    if meta["has_test"]:
        id_type = int if meta["layout"] == "kaggle-flat" else str
        test = pd.read_csv(out / "test.csv", dtype={"id": id_type, "path": str}, keep_default_na=False)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    sample = paths.raw_dir(cfg) / SAMPLE_SUBMISSION
    parts = {name: train[train["split"] == name].drop(columns="split").reset_index(drop=True)
             for name in ("train", "val")}
    limit, fraction = cfg.data.limit_per_class, cfg.data.val_fraction
    val_limit = max(1, math.ceil(limit * fraction / (1 - fraction))) if limit > 0 else 0
    return DatasetIndex(classes=list(meta["classes"]), train=_limit(parts["train"], limit, cfg.data.seed),
                        val=_limit(parts["val"], val_limit, cfg.data.seed), test=test, quarantine=quarantine,
                        sample_submission=sample if sample.is_file() else None,
                        indexed_paths=frozenset(train["path"]))


def _limit(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows per label, a seeded sample, in the original order (0 = all)."""
    if limit <= 0 or frame.empty:
        return frame
    parts = [group.sample(n=min(limit, len(group)), random_state=seed) for _, group in frame.groupby("label")]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def is_current(cfg: Config) -> bool:
    """Whether an index for `cfg` exists and was built with its layout, folder, classes and split."""
    meta = _read_meta(paths.index_dir(cfg))
    return meta is not None and not _stale(meta, cfg)


def _read_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wanted(cfg: Config) -> dict:
    wanted = {"layout": cfg.competition.layout, "raw_dir": str(paths.raw_dir(cfg).absolute()),
              "seed": cfg.data.seed, "val_fraction": cfg.data.val_fraction}
    if cfg.competition.layout == "kaggle-flat":
        wanted["classes"] = list(cfg.competition.classes)
    return wanted


def _stale(meta: dict, cfg: Config) -> bool:
    return any(meta.get(key) != value for key, value in _wanted(cfg).items())


def _describe(settings: dict) -> str:
    return f"seed {settings['seed']}, val_fraction {settings['val_fraction']:g}, {settings['layout']} layout"
