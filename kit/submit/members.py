"""The models a submission averages: the run, then its train.members (kit/train/members.py), each predicting
validation and test with its own image size, snapshots and refit; their probabilities averaged in log space,
equal weights.

    python -m kit submit [--set submit.members=false]     # the run alone

Equal weights, a geometric mean (`average`): nothing is fitted on the validation images, so the average's
out-of-fold score stays honest (each member's snapshot choice is out of fold already, and the calibration of
the average is fitted fold by fold by kit/submit/submit.py). Every member must have been validated on the run's own images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.config import Config, with_image_size
from kit.errors import KitError
from kit.model.calibrate import EPS
from kit.runs import RunDir
from kit.submit import snapshots


@dataclass
class Predicted:
    run: RunDir
    image_size: int
    choice: snapshots.Choice
    test: np.ndarray
    refit: dict | None
    val_log_loss: float | None = None  # its validation probabilities alone, floored (set by submit)

    def as_dict(self) -> dict:
        return {"run": str(self.run.path), "image_size": self.image_size, "snapshots": self.choice.as_dict(),
                "refit": self.refit, "val_log_loss": self.val_log_loss}


def runs_to_average(cfg: Config, run_dir: RunDir, val: pd.DataFrame) -> list[RunDir]:
    """[the run, its members...]: each member finished and validated on the run's images, else one line."""
    wanted = (run_dir.summary().get("members") or []) if cfg.submit.members else []  # kit/train/members.py
    runs = [run_dir]
    for member in map(run_dir.member, wanted):
        if not member.is_finished() or not member.best_model.is_file():
            raise KitError(f"member {member.name} of run {run_dir.name} is not trained ({member.path}): finish it with "
                           "`make train` (the same config continues), or submit with --set submit.members=false")
        split = member.validation_split()
        if split is None or set(split["path"]) != set(val["path"]):
            raise KitError(f"member {member.name} of run {run_dir.name} was validated on other images than the run: "
                           "retrain it with `make train`, or submit with --set submit.members=false")
        runs.append(member)
    return runs


def predict_run(cfg: Config, run_dir: RunDir, classes: list[str], val_paths: list[str], labels: np.ndarray,
                test_paths: list[str], refit_model) -> Predicted:
    """One run's chosen model(s) on validation, then on test (through its refit when it has one)."""
    model, its_classes = run_dir.load_model()
    if its_classes != classes:
        raise KitError(f"run {run_dir.name} was trained on classes {its_classes}, not {classes}: pick runs of this "
                       "dataset with submit.run")
    cfg = with_image_size(cfg, run_dir.image_size(model))  # e.g. a head-only run at its features' size
    from_features = run_dir.is_head_only_on_features()
    # Predicted here, by the same code as the test set: no shortcut through saved predictions.
    choice = snapshots.choose(cfg, run_dir, model, val_paths, labels, from_features)
    final_dir, final_model, refit = refit_model(cfg, run_dir, model)
    test = snapshots.predict_test(cfg, final_dir, final_model, choice, test_paths, from_features)
    return Predicted(run_dir, cfg.data.image_size, choice, test, refit)


def average(predicted: list[Predicted]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation, its out-of-fold version, test) probabilities, each the members' geometric mean: their mean
    logit (binary) or mean log-probability renormalised (softmax). Measured against the plain mean of the
    probabilities on the mini competition (seed 42, out-of-fold log loss): a fine-tuned model + heads at 256 and
    320 px, 0.0270 vs 0.0303; the two heads alone, 0.0291 vs 0.0293 over three seeds. A mean of probabilities
    is pulled towards 0.5 by the least confident member; the mean logit keeps the members' agreement sharp."""
    return (mean_in_log_space([p.choice.val for p in predicted]),
            mean_in_log_space([p.choice.val_out_of_fold for p in predicted]),
            mean_in_log_space([p.test for p in predicted]))


def mean_in_log_space(probabilities: list[np.ndarray]) -> np.ndarray:
    if len(probabilities) == 1:
        return probabilities[0]
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    if p.ndim == 2:  # binary: P(class 1) per image
        return 1 / (1 + np.exp(-np.mean(np.log(p) - np.log1p(-p), axis=0)))
    logs = np.mean(np.log(p), axis=0)
    logs -= logs.max(axis=1, keepdims=True)
    return np.exp(logs) / np.exp(logs).sum(axis=1, keepdims=True)
