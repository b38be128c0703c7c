"""Snapshot ensembles, chosen honestly: which of the run's SGDR cycle-end models to average, picked on the
validation predictions fold by fold, so the score shown for the choice was not made on the images it scores.

    python -m kit submit --set submit.snapshots=auto       # best | last_k | auto   (k: submit.snapshot_k)

`best` is best.keras alone (the epoch with the lowest validation log loss: a choice made on validation, so
its validation score flatters it); `last_k` the mean probability of the last k cycle-end snapshots. `auto`
considers last_1 .. last_K (fixed epochs: nothing chosen per epoch) and takes the one with the lowest log loss
on all validation images for the test set, never best.keras (kit/submit/snapshots.py); its
estimate is out of fold: for each fold, the candidate that scores best on the other folds, scored on this one.
"""
from __future__ import annotations

import numpy as np

from kit.errors import KitError
from kit.model.calibrate import fold_ids, smallest_class
from kit.model.metrics import clip_probabilities, log_loss


def candidates(snapshots: list[tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """{"last_1": the last snapshot's probabilities, "last_2": the mean of the last 2, ..., "last_K"}."""
    return {f"last_{k}": np.mean([p for _, p in snapshots[-k:]], axis=0) for k in range(1, len(snapshots) + 1)}


def wanted(setting: str, k: int, available: int) -> list[str] | None:
    """The candidate names a setting allows (None: all of them, for auto)."""
    if setting == "best":
        return ["best"]
    if setting == "last_k":
        if not available:
            raise KitError("submit.snapshots=last_k but the run keeps no snapshots (a head-only run, or one trained "
                           "before kit kept them): set submit.snapshots=best or auto")
        if k < 1 or k > available:
            raise KitError(f"submit.snapshots=last_k averages submit.snapshot_k={k} snapshots but the run keeps "
                           f"{available}: set submit.snapshot_k between 1 and {available}, or submit.snapshots=auto")
        return [f"last_{k}"]
    if setting == "auto":  # every last_k
        return None
    raise KitError(f"submit.snapshots must be best, last_k or auto, got {setting!r}")


def choose(labels, cands: dict[str, np.ndarray], floor: float, seed: int = 0, folds: int = 5):
    """(the name with the lowest validation log loss, {name: log loss}, out-of-fold probabilities of choosing).

    The out-of-fold probabilities are each fold's predictions from the candidate that won on the other folds:
    what choosing on validation scores on images it did not choose on."""
    labels = np.asarray(labels).astype(np.int64)
    floored = {name: clip_probabilities(p, floor)[0] for name, p in cands.items()}
    scores = {name: log_loss(labels, p) for name, p in floored.items()}
    chosen = min(scores, key=scores.get)
    folds = min(folds, smallest_class(labels))
    if folds < 2 or len(cands) == 1:
        return chosen, scores, floored[chosen]
    ids = fold_ids(labels, folds, seed)
    oof = np.empty_like(floored[chosen])
    for k in range(folds):
        held = ids == k
        winner = min(floored, key=lambda name: log_loss(labels[~held], floored[name][~held]))
        oof[held] = floored[winner][held]
    return chosen, scores, oof
