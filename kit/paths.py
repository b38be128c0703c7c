"""The one place that knows where things live. Every stage asks here; nothing builds paths itself.

    data/<slug>/download/<slug>.zip   what Kaggle served (or what --from pointed at: not copied)
    data/<slug>/raw/                  train/, test/, sample_submission.csv, extracted, never modified
    data/<slug>/index/                train.csv, test.csv, split.csv, quarantine.csv, checks
    cache/                            resized-image caches, keyed by the settings that made them
    runs/<run>/                       one training run: config, metrics, checkpoints, plots
    submissions/                      every submission written, <run>-<timestamp>.csv
    submission.csv                    the latest checked submission (+ .json: run, score, commit)
"""
from __future__ import annotations

from pathlib import Path

from kit.config import Config
from kit.errors import KitError


def competition_dir(cfg: Config) -> Path:
    return Path(cfg.paths.data_dir) / cfg.competition.slug


def download_dir(cfg: Config) -> Path:
    return competition_dir(cfg) / "download"


LAYOUTS = ("kaggle-flat", "folder")


def raw_dir(cfg: Config) -> Path:
    """Extracted competition files; for layout=folder, the user's own folder (read only)."""
    layout = cfg.competition.layout
    if layout not in LAYOUTS:
        raise KitError(f"config key 'competition.layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "folder":
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


def kaggle_input_dir(cfg: Config) -> Path:
    """Where a Kaggle Notebook mounts this competition's files."""
    return Path(cfg.competition.kaggle_input) / cfg.competition.slug


def latest_submission(cfg: Config) -> Path:
    return Path(cfg.paths.submission)
