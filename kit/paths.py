"""The one place that knows where things live. Every stage asks here; nothing builds paths itself.

    data/<slug>/download/<slug>.zip   what Kaggle served (or what --from pointed at: not copied)
    data/<slug>/raw/                  train/, test/, sample_submission.csv, extracted, never modified
    data/<slug>/index/                train.csv, test.csv, split.csv, quarantine.csv, checks
    cache/                            resized-image caches, keyed by the settings that made them
    runs/<run>/                       one training run: config, metrics, checkpoints, plots
    submissions/                      every submission written, <run>-<timestamp>.csv
    submission.csv                    the latest checked submission (+ .json: run, score, commit)

In a Kaggle Notebook these default to /kaggle/working/... (kit/kaggle_env.py), the competition is read from
kaggle_input_dirs, and already extracted train/ and test/ folders there are linked from raw/, not copied.
"""
from __future__ import annotations

from pathlib import Path

from kit.config import Config
from kit.errors import KitError


def competition_dir(cfg: Config) -> Path:
    return Path(cfg.paths.data_dir) / cfg.competition.slug


def download_dir(cfg: Config) -> Path:
    return competition_dir(cfg) / "download"


def raw_dir(cfg: Config) -> Path:
    """Extracted competition files; for layout=folder, the user's own folder (read only)."""
    if cfg.competition.layout == "folder":  # the layout's choices are checked at load
        if not cfg.competition.folder.strip():  # an empty path would index the working directory
            raise KitError("competition.folder is empty: set it to the folder holding one sub-folder per class, "
                           "e.g. SET=\"competition.folder=path/to/cat-breeds\"")
        return Path(cfg.competition.folder)
    return competition_dir(cfg) / "raw"


def index_dir(cfg: Config) -> Path:
    return competition_dir(cfg) / "index"


def cache_dir(cfg: Config) -> Path:
    return Path(cfg.paths.cache_dir)


def runs_dir(cfg: Config) -> Path:
    return Path(cfg.paths.runs_dir)


def submissions_dir(cfg: Config) -> Path:
    return Path(cfg.paths.submissions_dir)


def kaggle_input_dirs(cfg: Config) -> list[Path]:
    """Where a Kaggle Notebook may mount this competition's files, in the order looked at (read only):
    <input>/competitions/<slug> (2026), <input>/<slug> (older kernels), <input>/datasets/<owner>/<slug>."""
    base, slug = Path(cfg.competition.kaggle_input), cfg.competition.slug
    found = sorted((base / "datasets").glob(f"*/{slug}")) if (base / "datasets").is_dir() else []
    return [base / "competitions" / slug, base / slug, *found]




def latest_submission(cfg: Config) -> Path:
    return Path(cfg.paths.submission)
