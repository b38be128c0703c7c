"""Prediction with a trained run: find the run, load its best model, average test-time views.

    python -m kit submit      # uses these to predict every test id with TTA

A run folder holds `best.keras` (the best epoch by validation log loss) and `classes.json`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from kit import paths as kit_paths
from kit.config import Config
from kit.errors import KitError


def find_run(cfg: Config) -> Path:
    """The run named by `submit.run`, or the newest run folder holding a best model."""
    if cfg.submit.run:
        run = Path(cfg.submit.run)
        run = run if run.is_dir() else kit_paths.runs_dir(cfg) / cfg.submit.run
        if not (run / "best.keras").is_file():
            raise KitError(f"no trained model in {run}: check submit.run, or train one with `make train`")
        return run
    runs = sorted((p.parent for p in kit_paths.runs_dir(cfg).glob("*/best.keras")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise KitError(f"no trained run in {kit_paths.runs_dir(cfg)}: train one first with `make train`")
    return runs[-1]


def load_run(run: Path):
    """(model, classes) of a run. Loaded without its optimizer: prediction does not need it."""
    import keras

    import kit.model  # noqa: F401  registers the custom layers the saved model refers to

    model = keras.saving.load_model(run / "best.keras", compile=False)
    classes = json.loads((run / "classes.json").read_text())
    return model, classes


def predict_views(cfg: Config, model, images: np.ndarray | None, paths: Sequence[str],
                  views: Sequence[str]) -> np.ndarray:
    """Class probabilities averaged over the test-time `views`, in the order of `paths`.

    Binary models give P(class 1) as a vector; multi-class models an (n, classes) matrix.
    """
    from kit.pipeline import prediction_stream

    if not views:
        raise KitError("submit.tta is empty: give at least one view, e.g. [original, hflip]")
    from tqdm import tqdm

    total = None
    for view in views:
        stream = prediction_stream(cfg, images, len(paths), paths, view=view)
        with tqdm(total=len(paths), desc=f"predicting ({view})", unit="img") as bar:
            parts = []
            for batch in stream:
                parts.append(model.predict_on_batch(batch))
                bar.update(len(parts[-1]))
        probabilities = np.concatenate(parts)
        total = probabilities if total is None else total + probabilities
    mean = total / len(views)
    return mean[:, 0] if mean.shape[1] == 1 else mean
