"""Fold ensembles of the head on cached features: `train.folds: k` trains k heads, each on k-1 folds of the
training images and stopped at its best epoch on the fold it never saw, then averages them into the run's
one head.

    python -m kit train --set train.folds=5 train.finetune_epochs=0      # make train SET="train.folds=5"

Why averaged weights: the head is one Dense layer (after dropout, which is off at inference) on fixed
features, so the mean of k heads' weights gives exactly the mean of their logits: an ensemble that is still
one model (best.keras), so submit, predict and export need nothing new. Every head's epoch is chosen on its
own held-out fold, not on the validation split, so the validation score of the averaged head is one nobody
selected on, and the out-of-fold predictions (runs/<run>/oof_predictions.csv) score the training images
honestly too. An image's augmented passes stay in its own fold: a held-out image is never trained on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kit.config import Config
from kit.fsutil import write_text_atomic
from kit.model import features
from kit.model.calibrate import fold_ids
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.train.callbacks import BestEpoch
from kit.train.head import fit_head


def fit_fold_heads(cfg: Config, model, train_xy, val_xy, run_dir: RunDir, index) -> tuple[BestEpoch, list[int]]:
    """Train cfg.train.folds heads (kit/train/head.py's fit_head each), leave their average in the model.

    Returns (a BestEpoch whose `best` is the averaged head's validation log loss, each head's best epoch);
    writes metrics.csv (the folds' mean per epoch) and oof_predictions.csv."""
    k, n_classes, n = cfg.train.folds, len(index.classes), len(index.train)
    x, y = train_xy
    ids = fold_ids(index.train["label"].to_numpy(), k, cfg.data.seed)
    rows = np.tile(ids, len(x) // n)  # every pass of an image in the image's fold
    head = features.head_model(model)
    start = head.get_weights()
    weights, epochs, logs = [], [], []
    oof = np.zeros((n, 1 if n_classes == 2 else n_classes))
    for fold in range(k):
        head.set_weights(start)  # each head from the same initial weights: none starts from one that saw its fold
        held = ids == fold
        print(f"train: head {fold + 1} of {k}, on {int((~held).sum()):,} images, its epoch chosen on the other "
              f"{int(held.sum()):,}")
        best = fit_head(cfg, model, (x[rows != fold], y[rows != fold]), (x[:n][held], y[:n][held]), run_dir, n_classes,
                        choose_epoch=True)
        weights.append(head.get_weights())
        epochs.append(best.best_epoch)
        oof[held] = features.probabilities_of(head, x[:n][held])
        logs.append(pd.read_csv(run_dir.metrics))
    head.set_weights([np.mean(layer, axis=0) for layer in zip(*weights)])
    write_text_atomic(run_dir.metrics, mean_log(logs).to_csv(index=False))
    labels = index.train["label"].to_numpy()
    probabilities = oof[:, 0] if n_classes == 2 else oof
    write_oof(run_dir, index.train, probabilities, index.classes)
    val_probabilities = features.probabilities_of(head, val_xy[0])
    val_loss = log_loss(index.val["label"].to_numpy(), val_probabilities[:, 0] if n_classes == 2 else val_probabilities)
    print(f"train: {k} heads averaged: out-of-fold log loss {log_loss(labels, probabilities):.4f} on the "
          f"{n:,} training images, {val_loss:.4f} on validation (no TTA); best epochs {epochs}")
    result = BestEpoch()
    result.best, result.best_epoch, result.weights = val_loss, int(np.median(epochs)), head.get_weights()
    return result, epochs


def mean_log(logs: list[pd.DataFrame]) -> pd.DataFrame:
    """The folds' metrics.csv averaged epoch by epoch (a learning curve over k held-out folds)."""
    return pd.concat(logs).groupby("epoch", as_index=False).mean(numeric_only=True)


def write_oof(run_dir: RunDir, train: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> None:
    frame = train[["path", "label"]].reset_index(drop=True).copy()
    if probabilities.ndim == 1:
        frame[f"prob_{classes[1]}"] = probabilities
    else:
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = probabilities[:, i]
    write_text_atomic(run_dir.oof_predictions, frame.to_csv(index=False))
