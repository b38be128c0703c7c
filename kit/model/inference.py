"""A trained model's probabilities for a list of images, averaged over test-time views: what train, submit,
predict and export share below the stages.

    python -m kit submit --config configs/dogs-vs-cats-redux.yaml      (train, submit and predict call this)
    probabilities = predict_views(cfg, model, images, paths, ["original", "hflip"])
    probabilities = predict_split(cfg, model, list(index.val["path"]), "val", run_dir.is_head_only_on_features())

Binary models give P(class 1) as a vector; multi-class models an (n, classes) matrix (`class_table` turns
either into one column per class). From ENGINE_MIN_IMAGES images on, the model runs on
train.feature_engine (kit/model/engine.py; its speed: BENCHMARKS.md, section 2).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from kit.config import Config
from kit.errors import KitError

# From this many images on the model runs on train.feature_engine: below it, the engine's one-time conversion
# to TFLite costs more than it saves (BENCHMARKS.md, section 2).
ENGINE_MIN_IMAGES = 200


def predict_views(cfg: Config, model, images: np.ndarray | None, paths: Sequence[str],
                  views: Sequence[str], progress: bool = True) -> np.ndarray:
    """Class probabilities averaged over the test-time `views`, in the order of `paths`.

    Binary models give P(class 1) as a vector; multi-class models an (n, classes) matrix.
    """
    from tqdm import tqdm

    from kit.model import device, engine
    from kit.data.pipeline import prediction_stream

    forward = engine.model_function(cfg, model) if len(paths) >= ENGINE_MIN_IMAGES else device.forward(model)
    total = None
    for view in views:
        stream = prediction_stream(cfg, images, len(paths), paths, view=view)
        with tqdm(total=len(paths), desc=f"predicting ({view})", unit="img", disable=not progress) as bar:
            parts = []
            for batch in stream:
                parts.append(np.asarray(forward(np.asarray(batch))))
                bar.update(len(parts[-1]))
        probabilities = np.concatenate(parts)
        total = probabilities if total is None else total + probabilities
    mean = total / len(views)
    return mean[:, 0] if mean.shape[1] == 1 else mean


def predict_split(cfg: Config, model, paths: Sequence[str], name: str, from_features: bool = False) -> np.ndarray:
    """The submit.tta-averaged probabilities of one split (`name`: "val", "test"), in the order of `paths`.

    A head trained on cached features alone (RunDir.is_head_only_on_features) predicts from those cached
    features; any other run from the images, through the pixel cache (kit.data.pipeline.load_images).
    """
    paths = list(paths)
    if from_features:
        from kit.model import features

        return features.predict_views_from_features(cfg, model, paths, cfg.submit.tta, name)
    from kit import timings
    from kit.data import pipeline

    images = pipeline.load_images(cfg, paths, name)  # "decode <name>" when not cached yet
    with timings.step(f"predict {name}", len(paths) * len(cfg.submit.tta)):
        return predict_views(cfg, model, images, paths, cfg.submit.tta)


def class_table(probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, classes) probabilities from predict_views' output: binary P(class 1) becomes [1 - p, p]."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        return np.stack([1.0 - probabilities, probabilities], axis=1)
    if probabilities.shape[1] != n_classes:
        raise KitError(f"the model gives {probabilities.shape[1]} outputs but the run has {n_classes} classes: "
                       "its classes.json does not belong to its best.keras; retrain the run")
    return probabilities


def val_predictions_frame(val: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """path, label, class_name and prob (binary: P(classes[1])) or prob_<class> per class."""
    frame = val[["path", "label", "class_name"]].reset_index(drop=True).copy()
    if probabilities.ndim == 1:
        frame["prob"] = probabilities
    else:
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = probabilities[:, i]
    return frame
