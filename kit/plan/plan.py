"""`kit plan`: what `train` then `submit` will do with this config, data and machine, and how long it will take.

    python -m kit plan --config configs/dogs-vs-cats-redux.yaml [--stage train|submit|all] [--json plan.json]

Each step with its images and estimated seconds (decode into the pixel cache, feature passes, the head, each
fine-tune epoch, prediction with TTA), the disk its new caches need against the free space, and, when
fine-tuning on a CPU would be long, the faster paths. The estimate comes from a short timed probe on this
machine (kit/plan/probe.py, kept under <cache>/probes/), not a table. The CLI builds the index first.
"""
from __future__ import annotations

import json
from pathlib import Path

from kit.config import Config
from kit.data.dataset import load_index
from kit.fsutil import write_text_atomic
from kit.model import features
from kit.plan.estimate import describe


def run(cfg: Config, which: str = "all", json_path: str | None = None) -> Path | None:
    """Print the plan for stage `which` (train, submit or all); write its steps to `json_path` when given (and return it)."""
    cfg = features.run_config(cfg)  # a head-only run works at train.feature_image_size
    index = load_index(cfg)
    text, steps = describe(cfg, index, which, features.is_head_only(cfg))
    print(text, flush=True)
    if json_path is None:
        return None
    out = Path(json_path)
    write_text_atomic(out, json.dumps([vars(s) for s in steps], indent=2) + "\n")
    return out
