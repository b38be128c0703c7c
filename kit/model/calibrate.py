"""Calibrated probabilities, chosen honestly: each method fitted on k-1 folds of the validation predictions
and scored on the held fold, so the number shown was never fitted on the photos it scores.

    python -m kit submit --set submit.calibrate=auto        # auto | none | clip | temperature

Log loss punishes a confident mistake without bound, so raw probabilities are rarely the best submission:
- `clip`: probabilities clipped to [b, 1 - b], b chosen from CLIP_BOUNDS (the folklore fix, at a price);
- `temperature`: one parameter on the logit, p' = sigmoid(logit(p) / T) (softmax(log p / T) for several
  classes; Guo et al. 2017, "On Calibration of Modern Neural Networks"): T > 1 softens an over-confident model;
- `none`: raw.
`auto` takes the lowest out-of-fold log loss. Every method ends with the floor (submit.clip, 1e-4 by default)
against an infinite loss. Shared below the stages: submit chooses and applies it, the report shows it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from kit.errors import KitError
from kit.model.metrics import clip_probabilities, log_loss

METHODS = ("none", "clip", "temperature")
CLIP_BOUNDS = (0.0, 1e-4, 3e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2e-2, 5e-2)
FOLDS = 5
EPS = 1e-7  # how far from 0 and 1 a probability is taken before its logit (float32 sigmoids reach 1.0)


@dataclass
class Calibration:
    method: str  # the chosen one
    params: dict  # fitted on every validation prediction: {"bound": b} or {"temperature": T}
    floor: float  # submit.clip, applied last whatever the method
    folds: int  # 0 when there were too few images per class to cross-validate
    out_of_fold: dict = field(default_factory=dict)  # method -> log loss of its held-fold predictions
    fitted: dict = field(default_factory=dict)  # method -> its parameters fitted on all of validation
    held_out: np.ndarray | None = field(default=None, repr=False)  # the chosen method's held-fold probabilities

    def apply(self, p: np.ndarray) -> np.ndarray:
        return transform(self.method, self.params, p, self.floor)

    def honest(self, p: np.ndarray) -> np.ndarray:
        """What the validation score should be computed on: the held-fold probabilities when there were folds,
        else `p` calibrated by the fit on all of it (not cross-validated: too few images per class)."""
        return self.held_out if self.held_out is not None else self.apply(p)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "held_out"}


def transform(method: str, params: dict, p: np.ndarray, floor: float) -> np.ndarray:
    """Probabilities (1-D binary P(class 1), or (n, k)) through `method` with `params`, then the floor."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if method == "clip":
        p = clip_probabilities(p, params["bound"])[0]
    elif method == "temperature":
        p = scaled(p, params["temperature"])
    elif method != "none":
        raise KitError(f"submit.calibrate must be one of auto, {', '.join(METHODS)}, got {method!r}")
    return clip_probabilities(p, floor)[0]


def scaled(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities through their logits (binary) or log-probabilities (softmax)."""
    if p.ndim == 1:
        q = np.clip(p, EPS, 1 - EPS)
        return 1 / (1 + np.exp(-np.log(q / (1 - q)) / temperature))
    z = np.log(np.clip(p, EPS, 1)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(method: str, labels: np.ndarray, p: np.ndarray, floor: float) -> dict:
    """The method's parameters that minimise log loss on (labels, p)."""
    if method == "none":
        return {}
    if method == "clip":
        losses = [log_loss(labels, transform("clip", {"bound": b}, p, floor)) for b in CLIP_BOUNDS]
        return {"bound": CLIP_BOUNDS[int(np.argmin(losses))]}
    # Log loss is convex in 1/T (a one-weight logistic regression), so a golden-section search on log T finds
    # its minimum; [1/8, 8] is far wider than trained networks need (~0.8-3).
    lo, hi, golden = np.log(1 / 8), np.log(8), (np.sqrt(5) - 1) / 2
    loss = lambda log_t: log_loss(labels, transform("temperature", {"temperature": float(np.exp(log_t))}, p, floor))
    for _ in range(40):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return {"temperature": round(float(np.exp((lo + hi) / 2)), 4)}


def smallest_class(labels: np.ndarray) -> int:
    """Images of the rarest class present: no more folds than that, or a fold would miss the class."""
    return int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image, stratified by class: each fold holds its share of every class."""
    rng = np.random.default_rng(seed)
    ids = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        where = rng.permutation(np.flatnonzero(labels == label))
        ids[where] = np.arange(len(where)) % folds
    return ids


def out_of_fold(method: str, labels: np.ndarray, p: np.ndarray, floor: float, ids: np.ndarray) -> np.ndarray:
    """Each image's probability calibrated by parameters fitted on the other folds only."""
    out = np.empty_like(p, dtype=np.float64)
    for k in np.unique(ids):
        held = ids == k
        out[held] = transform(method, fit(method, labels[~held], p[~held], floor), p[held], floor)
    return out


def choose(setting: str, labels, p, floor: float, seed: int = 0, folds: int = FOLDS) -> Calibration:
    """The calibration `setting` asks for (auto: the lowest out-of-fold log loss), with every method's score."""
    labels, p = np.asarray(labels).astype(np.int64), np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if setting != "auto" and setting not in METHODS:
        raise KitError(f"submit.calibrate must be one of auto, {', '.join(METHODS)}, got {setting!r}")
    folds = min(folds, smallest_class(labels))
    fitted = {m: fit(m, labels, p, floor) for m in METHODS}
    if folds < 2:  # too few images of a class to hold any out: no honest choice, so no calibration
        chosen = setting if setting != "auto" else "none"
        return Calibration(chosen, fitted[chosen], floor, 0, {}, fitted)
    ids = fold_ids(labels, folds, seed)
    held = {m: out_of_fold(m, labels, p, floor, ids) for m in METHODS}
    scores = {m: log_loss(labels, held[m]) for m in METHODS}
    chosen = min(METHODS, key=scores.get) if setting == "auto" else setting
    return Calibration(chosen, fitted[chosen], floor, folds, scores, fitted, held[chosen])


def interval(labels, p, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the log loss of (labels, p): the images resampled with replacement."""
    labels, p = np.asarray(labels).astype(np.int64), np.asarray(p, dtype=np.float64)
    likelihood = p[np.arange(len(p)), labels] if p.ndim == 2 else np.where(labels == 1, p, 1 - p)
    losses = -np.log(np.clip(likelihood, 1e-15, 1))
    rng = np.random.default_rng(seed)
    means = losses[rng.integers(0, len(losses), size=(draws, len(losses)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
