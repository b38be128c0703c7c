"""`train.head_solver: logistic`: the head on cached features solved exactly, as an L2-regularised logistic
regression (scikit-learn), its strength chosen by cross-validation in the training images.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set train.head_solver=logistic

Why: a head on frozen features is a convex problem, and the SGD head (kit/train/head.py) leaves its
regularisation to dropout and a fixed number of epochs. Measured on the mini competition's 256 px MobileNetV2
features, kit's own split: 0.0283-0.0291 validation log loss against 0.0330 for the Adam head (README.md, "What
to expect").
The features are standardised (each dimension to mean 0, variance 1, so one L2 strength fits all of them) and
the standardisation is folded into the model's own `head_out` Dense layer: best.keras, submit, predict and
export see an ordinary model. Binary: P(last class) from one sigmoid unit; more classes: multinomial (softmax).

The inverse strength C is train.logistic_c, or (0) the one with the lowest out-of-fold log loss over
LOGISTIC_FOLDS folds of the training images (an image's augmented passes stay in its fold); the validation
images are never used to choose it, so the validation score printed is an honest one. Writes metrics.csv (one
row: the fitted head's losses) and logistic_c.csv (each C's out-of-fold log loss).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from kit.config import Config
from kit.errors import KitError
from kit.fsutil import write_text_atomic
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.train.callbacks import STAGES, BestEpoch

C_GRID = (0.001, 0.00316, 0.01, 0.0316, 0.1, 0.316, 1.0)  # inverse L2 strengths tried, strongest first
LOGISTIC_FOLDS = 5


def uses_logistic(cfg: Config) -> bool:
    """Whether the head on features is solved here: train.head_solver=logistic, or auto on a head-only run (the
    fine-tuning recipe was measured starting from the Adam head; a head with a hidden layer is not convex)."""
    t = cfg.train
    head_only = t.head == "features" and t.finetune_epochs == 0 and not cfg.model.dense_units
    return t.head_solver == "logistic" or (t.head_solver == "auto" and head_only)


def standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per feature; a constant feature (a ReLU that never fires) keeps scale 1."""
    mean, scale = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
    return mean, np.where(scale < 1e-6, 1.0, scale)


def _classifier(c: float):
    from sklearn.linear_model import LogisticRegression

    # lbfgs on standardised features converges in a few dozen iterations; warm_start walks the C path from the
    # strongest regularisation (each fit starts from the previous one's weights). Measured on the mini
    # competition's features: float32 and tol 1e-4 search the grid in 3.0 s against 7.6 s at float64 and 1e-5,
    # with the same C chosen and validation log loss 0.0259 vs 0.0258.
    return LogisticRegression(C=c, max_iter=500, tol=1e-4, warm_start=True)


def _probabilities(clf, z: np.ndarray, n_classes: int) -> np.ndarray:
    p = clf.predict_proba(z)
    return p[:, 1] if n_classes == 2 else p


def choose_c(z: np.ndarray, labels: np.ndarray, n_images: int, seed: int, n_classes: int) -> pd.DataFrame:
    """Each C of C_GRID and its out-of-fold log loss on the original pictures (rows [0, n_images))."""
    from kit.model.calibrate import fold_ids

    ids = fold_ids(labels[:n_images], LOGISTIC_FOLDS, seed)
    rows = np.tile(ids, len(z) // n_images)
    oof = {c: np.zeros((n_images,) if n_classes == 2 else (n_images, n_classes)) for c in C_GRID}
    for fold in range(LOGISTIC_FOLDS):
        train, held = rows != fold, np.flatnonzero(ids == fold)
        clf = _classifier(C_GRID[0])
        for c in C_GRID:
            clf.set_params(C=c)
            clf.fit(z[train], labels[train])
            oof[c][held] = _probabilities(clf, z[held], n_classes)
    return pd.DataFrame({"C": list(C_GRID), "oof_log_loss": [log_loss(labels[:n_images], oof[c]) for c in C_GRID]})


def set_head_weights(head, clf, mean: np.ndarray, scale: np.ndarray) -> None:
    """The fitted regression, standardisation folded in, as the head's `head_out` weights: w·(x-m)/s + b."""
    out = head.get_layer("head_out")
    coef, intercept = clf.coef_ / scale, clf.intercept_  # (1 or K, d), (1 or K,)
    kernel, bias = coef.T, intercept - coef @ mean
    if tuple(out.kernel.shape) != kernel.shape:
        raise KitError(f"train.head_solver=logistic needs the head to be one Dense layer on the pooled features "
                       f"(its kernel is {tuple(out.kernel.shape)}): set model.dense_units=0")
    out.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def fit_logistic(cfg: Config, head, train_xy, val_xy, run_dir: RunDir, n_classes: int) -> BestEpoch:
    """Fit the head (features.head_model(model): its layers are the model's) on feature arrays; see the module."""
    x, y = train_xy
    labels = _labels(y, n_classes)
    n_images = len(x) // (cfg.train.feature_passes + 1)
    mean, scale = standardised(x)
    z = ((x - mean) / scale).astype(np.float32)
    c = cfg.train.logistic_c
    if not c:
        table = choose_c(z, labels, n_images, cfg.data.seed, n_classes)
        write_text_atomic(run_dir.path / "logistic_c.csv", table.to_csv(index=False))
        c = float(table.loc[table["oof_log_loss"].idxmin(), "C"])
        print(f"train: logistic head, C={c:g} chosen by {LOGISTIC_FOLDS}-fold cross-validation in the training "
              f"images (out-of-fold log loss {table['oof_log_loss'].min():.4f})")
    clf = _classifier(c).fit(z, labels)
    set_head_weights(head, clf, mean, scale)
    row = {"epoch": 0, "stage": STAGES["head"], "lr": np.nan, **_scores(head, x, y, n_classes, "")}
    best = BestEpoch()
    if val_xy is not None:
        row.update(_scores(head, *val_xy, n_classes, "val_"))
        best.best, best.best_epoch = row["val_log_loss"], 1
    best.weights, best.c = head.get_weights(), c
    write_text_atomic(run_dir.metrics, pd.DataFrame([row]).to_csv(index=False))
    return best


def row_seconds(dim: int, n_classes: int, rows: int = 2048) -> float:
    """Seconds per row of one logistic-regression fit (kit/train/logistic.py's solver) on standardised vectors
    whose labels a linear rule decides, as separable as real features are."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, dim))
    labels = (x @ rng.normal(size=(dim, n_classes)) + rng.normal(scale=4.0, size=(rows, n_classes))).argmax(axis=1)
    started = time.perf_counter()
    _classifier(0.0316).fit(x, labels)
    return (time.perf_counter() - started) / rows


def _labels(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class numbers from recipe.label_array's targets ((n, 1) P(class 1), or one-hot rows)."""
    return (y[:, 0] > 0.5).astype(int) if n_classes == 2 else y.argmax(axis=1)


def _scores(head, x: np.ndarray, y: np.ndarray, n_classes: int, prefix: str) -> dict:
    from kit.model.features import probabilities_of

    p, labels = probabilities_of(head, x), _labels(y, n_classes)
    p = p[:, 0] if n_classes == 2 else p
    predicted = (p > 0.5).astype(int) if n_classes == 2 else p.argmax(axis=1)
    loss = log_loss(labels, p)
    return {f"{prefix}loss": loss, f"{prefix}log_loss": loss, f"{prefix}accuracy": float((predicted == labels).mean())}
