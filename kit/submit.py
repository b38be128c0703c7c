"""`make submit`: predict every test id with test-time augmentation and write a checked submission.

    python -m kit submit --config configs/dogs-vs-cats-redux.yaml [--set submit.run=<run>]

The validation split goes through exactly the same post-processing first (TTA views, clipping,
the label column's direction: label = P(dog)), and its log loss is printed and stored with the
submission, so a flipped label or misaligned ids shows up as a bad score before any upload.
Writes submissions/<run>-<timestamp>.csv and copies it to submission.csv (each through a temporary
name); a check that fails leaves every existing submission untouched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit import data, pipeline, predict
from kit import paths as kit_paths
from kit.config import Config
from kit.errors import KitError
from kit.submission import build_frame, clip_probabilities, log_loss, validation_score, write_submission


CLIP_TABLE = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02)


def clip_table(labels: np.ndarray, probabilities: np.ndarray, chosen: float) -> str:
    """Validation log loss at a few clip bounds: clipping insures against a confident mistake, at a price."""
    cells = []
    for bound in sorted(set(CLIP_TABLE) | {chosen}):
        loss = log_loss(labels, clip_probabilities(probabilities, bound)[0] if bound else probabilities)
        cells.append(f"{bound:g}{'*' if bound == chosen else ''}: {loss:.4f}")
    return "validation log loss by clip bound (* = submit.clip): " + ", ".join(cells)


def predict_split(cfg: Config, model, paths: list[str], name: str, from_features: bool) -> np.ndarray:
    """TTA-averaged probabilities for one split: from cached backbone features for a precompute run."""
    if from_features:
        from kit import features

        return features.predict_views_from_features(cfg, model, paths, cfg.submit.tta, name)
    return predict.predict_views(cfg, model, pipeline.load_images(cfg, paths, name), paths, cfg.submit.tta)


def score_validation(cfg: Config, model, index, classes: list[str], from_features: bool = False) -> dict:
    """Validation metrics through the submission's own path (TTA, clipping, column direction)."""
    labels = index.val["label"].to_numpy()
    # Predicted here, by the same code as the test set: no shortcut through saved predictions.
    probabilities = predict_split(cfg, model, list(index.val["path"]), "val", from_features)
    print(f"submit: {clip_table(labels, probabilities, cfg.submit.clip)}")
    return validation_score(labels, probabilities, cfg.submit.clip, classes)


def run(cfg: Config) -> Path:
    """Write the submission for the chosen run; return the archived CSV's path."""
    index = data.load_index(cfg)
    if index.test is None or index.sample_submission is None:
        raise KitError("this dataset has no test images and sample_submission.csv: nothing to submit "
                       "(use `make predict` for your own images)")
    run = predict.find_run(cfg)
    model, classes = predict.load_run(run)
    if classes != index.classes:
        raise KitError(f"run {run.name} was trained on classes {classes}, the index has {index.classes}: "
                       f"pick a run of this dataset with submit.run")
    cfg = predict.at_run_size(cfg, model, run)  # e.g. a precompute run at train.precompute_image_size
    print(f"submit: run {run.name} at {cfg.data.image_size} px, TTA views {cfg.submit.tta}, clip {cfg.submit.clip}")
    from kit.features import is_precompute_run

    from_features = is_precompute_run(run)
    score = score_validation(cfg, model, index, classes, from_features)
    print(f"submit: validation log loss {score['val_log_loss']:.4f}, accuracy {score['val_accuracy']:.4f} "
          f"on {score['val_rows']} images (after TTA and clipping; constant prior scores "
          f"{score['val_prior_log_loss']:.4f})")
    test_probabilities = predict_split(cfg, model, list(index.test["path"]), "test", from_features)
    frame = build_frame(index.test["id"].to_numpy(), test_probabilities, classes)
    meta = {**score, "run": run.name, "tta": list(cfg.submit.tta), "competition": cfg.competition.slug}
    return write_submission(frame, index.sample_submission, kit_paths.submissions_dir(cfg), run.name,
                            cfg.submit.clip, extra_meta=meta, latest_path=kit_paths.latest_submission(cfg))
