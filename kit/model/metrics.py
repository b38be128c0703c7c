"""Log loss as Kaggle scores it, and the clipping that insures a submission against one confident mistake.

    python -c "from kit.model.metrics import log_loss; print(log_loss([1, 0], [0.9, 0.2]))"

Shared below the stages: training reports it, submit scores validation with it, the report shows it.
Binary probabilities are 1-D P(class 1); multi-class ones an (n, classes) matrix.
"""
from __future__ import annotations

import numpy as np
from pandas.api import types as ptypes

from kit.errors import KitError


def clip_probabilities(p: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """Clip to [bound, 1 - bound] and count the values that moved.

    1-D `p` is binary (P(positive class)); 2-D `p` is one row per item, one column per class, and its
    rows are renormalised after clipping so they still sum to 1 (what Kaggle's multi-class scorer does).
    """
    _check_bound(bound)
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim not in (1, 2):
        raise KitError(f"probabilities must be 1-D (binary) or 2-D (one column per class), got shape {p.shape}")
    n_clipped = int(np.count_nonzero((p < bound) | (p > 1 - bound)))
    clipped = np.clip(p, bound, 1 - bound)
    if clipped.ndim == 2:
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return clipped, n_clipped


def log_loss(y_true, p, bound: float | None = None) -> float:
    """Mean negative log likelihood (natural log), as Kaggle scores it.

    Binary: `y_true` 0/1 and 1-D `p` = P(class 1). Multi-class: integer labels and an (n, k) matrix.
    Probabilities are clipped to [bound, 1 - bound] (1e-15 when bound is None, so log(0) never happens).
    """
    y = np.asarray(y_true)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0 or len(y) != len(p):
        raise KitError(f"log loss needs as many labels as predictions, got {len(y)} labels and {len(p)} predictions")
    if np.isnan(p).any():
        raise KitError(f"log loss: {int(np.isnan(p).sum())} predictions are NaN: fix the model output first")
    n_classes = 2 if p.ndim == 1 else p.shape[1]
    if not ptypes.is_integer_dtype(y) and not np.array_equal(y, np.round(y)):
        raise KitError(f"log loss labels must be integer class numbers, got e.g. {y.ravel()[0]!r}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise KitError(f"log loss labels must be in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    clipped, _ = clip_probabilities(p, 1e-15 if bound is None else bound)
    if clipped.ndim == 1:
        likelihood = np.where(y == 1, clipped, 1 - clipped)
    else:
        likelihood = clipped[np.arange(len(y)), y]
    return float(-np.mean(np.log(likelihood)))


def prior_log_loss(labels, n_classes: int = 2) -> float:
    """Log loss of always predicting the class frequencies: the entropy of the labels (ln 2 if balanced)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    freq = counts[counts > 0] / counts.sum()
    return float(-(freq * np.log(freq)).sum())


def _check_bound(bound: float) -> None:
    if not 0 <= bound < 0.5:
        raise KitError(f"clip bound must be in [0, 0.5), got {bound}: set submit.clip, e.g. 0.0001")
