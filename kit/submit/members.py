"""The models a submission averages: the run, then its train.members (kit/train/members.py), each predicting
validation and test with its own image size, snapshots and refit; their probabilities averaged in log space.

    python -m kit submit [--set submit.members=false]     # the run alone

A geometric mean (`average`) with equal weights, nothing fitted (submit.member_weights=auto: the run at 0.5,
0.75 or alone too, chosen on validation like the snapshots, measured worse out of fold), with an out-of-fold
estimate: each member's snapshot choice is out of fold already, and the calibration of the average is fitted
fold by fold by kit/submit/submit.py. Every member must have been validated on the run's own images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.config import Config, with_image_size
from kit.errors import KitError
from kit.model import ensemble
from kit.model.features import saw_mirrored, with_tta
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


def member_numbers(cfg: Config, run_dir: RunDir) -> list[int]:
    """The members (numbers from 1) the run trained and submit averages: none with submit.members=false."""
    return (run_dir.summary().get("members") or []) if cfg.submit.members else []  # kit/train/members.py


def runs_to_average(cfg: Config, run_dir: RunDir, val: pd.DataFrame) -> list[RunDir]:
    """[the run, its members...]: each member finished and validated on the run's images, else one line."""
    runs = [run_dir]
    for member in map(run_dir.member, member_numbers(cfg, run_dir)):
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
                test_paths: list[str], refit_model, loaded: tuple | None = None) -> Predicted:
    """One run's chosen model(s) on validation, then on test (through its refit when it has one); `loaded`:
    its (model, classes) when the caller has them already."""
    model, its_classes = loaded or run_dir.load_model()
    if its_classes != classes:
        raise KitError(f"run {run_dir.name} was trained on classes {its_classes}, not {classes}: pick runs of this "
                       "dataset with submit.run")
    cfg = with_image_size(cfg, run_dir.image_size(model))  # e.g. a head-only run at its features' size
    cfg = with_tta(cfg, saw_mirrored(run_dir))  # submit.tta=[auto]: each run's own views
    from_features = run_dir.is_head_only_on_features()
    # Predicted here, by the same code as the test set: no shortcut through saved predictions.
    choice = snapshots.choose(cfg, run_dir, model, val_paths, labels, from_features)
    final_dir, final_model, refit = refit_model(cfg, run_dir, model)
    test = snapshots.predict_test(cfg, final_dir, final_model, choice, test_paths, from_features)
    return Predicted(run_dir, cfg.data.image_size, choice, test, refit)


RUN_WEIGHTS = (0.5, 0.75, 1.0)  # the run's share beside "equal" (1/n); the members split the rest equally


def weightings(n: int, setting: str = "auto") -> dict[str, np.ndarray]:
    """{name: weights of the run and its n - 1 members}: equal, then (auto) the run at RUN_WEIGHTS ("run alone")."""
    out = {"equal": np.full(n, 1 / n)}
    for share in RUN_WEIGHTS if setting == "auto" else ():
        if share > 1 / n:
            out["run alone" if share == 1 else f"run {share:g}"] = np.array([share] + [(1 - share) / (n - 1)] * (n - 1))
    return out


def average(predicted: list[Predicted], labels: np.ndarray, floor: float, seed: int, setting: str = "equal"):
    """(weighting's name, {name: validation log loss}, validation, its out-of-fold version, test probabilities).

    Each weighting is a weighted geometric mean (the mean logit for two classes, the mean log-probability
    renormalised for more): measured against the plain mean of probabilities on the mini competition (seed 42,
    out of fold), a fine-tuned model + heads at 256 and 320 px 0.0270 vs 0.0303. A mean of probabilities is
    pulled towards 0.5 by the least confident member; the mean logit keeps the members' agreement sharp.
    submit.member_weights=equal (the default) gives every model the same weight. `auto` chooses the weighting
    like the snapshots (kit/model/ensemble.py): the lowest validation log loss for the test set, out of fold for
    the estimate. A strong fine-tuned run beside two weaker heads can look better alone or weighted up (seed 7:
    0.0165 alone, 0.0194 equal, 0.0155 at 0.75, all in sample), but out of fold the choice loses: equal 0.0240 /
    0.0208 / 0.0174 against auto 0.0241 / 0.0257 / 0.0182 (seeds 42 / 7 / 1234): choosing among four
    weightings on 480 photos per fold costs more than it finds."""
    if len(predicted) == 1:
        p = predicted[0]
        return "run alone", {}, p.choice.val, p.choice.val_out_of_fold, p.test
    weights = weightings(len(predicted), setting)
    def each(arrays):
        return {name: mean_in_log_space(arrays, w) for name, w in weights.items()}
    val, val_oof = each([p.choice.val for p in predicted]), each([p.choice.val_out_of_fold for p in predicted])
    name, scores, _ = ensemble.choose(labels, val, floor, seed)
    _, _, out_of_fold = ensemble.choose(labels, val_oof, floor, seed)
    return name, scores, val[name], out_of_fold, mean_in_log_space([p.test for p in predicted], weights[name])


def mean_in_log_space(probabilities: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    if len(probabilities) == 1:
        return probabilities[0]
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    w = np.full(len(p), 1 / len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w.reshape((-1,) + (1,) * (p.ndim - 1))
    if p.ndim == 2:  # binary: P(class 1) per image
        return 1 / (1 + np.exp(-np.sum(w * (np.log(p) - np.log1p(-p)), axis=0)))
    logs = np.sum(w * np.log(p), axis=0)
    logs -= logs.max(axis=1, keepdims=True)
    return np.exp(logs) / np.exp(logs).sum(axis=1, keepdims=True)
