"""Which run `make train` continues, and whether it may: the config must not have changed.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml   # killed? run it again

A run that has no summary.json is unfinished. Started again with the same config, `make train`
continues its newest unfinished run from the last completed epoch (Keras' BackupAndRestore keeps
the weights, the optimizer state and the epoch). With a changed config it refuses, naming the keys,
because a run whose settings changed halfway can't be explained or reproduced.
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from kit import paths as kit_paths
from kit.config import Config, config_dict
from kit.errors import KitError

# Sections that don't change what training computes: where files go, what submit/export/lr-find do.
IGNORED = {"paths", "submit", "lr_find", "export", "name"}


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(saved: dict, current: dict) -> list[str]:
    """The dotted keys whose values differ between two config dicts, ignoring IGNORED sections."""
    a = {k: v for k, v in flatten(saved).items() if k.split(".")[0] not in IGNORED}
    b = {k: v for k, v in flatten(current).items() if k.split(".")[0] not in IGNORED}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "train.run_name")


def is_finished(run: Path) -> bool:
    return (run / "summary.json").is_file()


def unfinished_run(cfg: Config) -> Path | None:
    """The newest unfinished run of this config (or the one named by train.run_name), if any."""
    runs = kit_paths.runs_dir(cfg)
    if cfg.train.run_name:
        run = runs / cfg.train.run_name
        return run if (run / "config.yaml").is_file() and not is_finished(run) else None
    candidates = [p.parent for p in runs.glob(f"{cfg.name}-*/config.yaml") if not is_finished(p.parent)]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def choose_run(cfg: Config, resume: bool) -> tuple[Path, bool]:
    """(run folder, resuming?): an unfinished run to continue, or a new folder."""
    run = unfinished_run(cfg) if resume else None
    if run is not None:
        saved = yaml.safe_load((run / "config.yaml").read_text())
        changed = changed_keys(saved, config_dict(cfg))
        if changed:
            raise KitError(f"cannot resume run {run.name}: the config changed ({', '.join(changed)}); "
                           f"restore those values, or start a new run with --set train.resume=false")
        return run, True
    name = cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = kit_paths.runs_dir(cfg) / name
    if is_finished(run):
        raise KitError(f"run {run} is already finished: choose another train.run_name")
    if run.exists() and any(run.iterdir()):  # never train over files that are not an unfinished run of ours
        why = "resume it with train.resume=true" if resume is False and (run / "config.yaml").is_file() \
            else "it is not an unfinished kit run (no config.yaml)"
        raise KitError(f"run folder {run} already exists: choose another train.run_name, or {why}")
    return run, False
