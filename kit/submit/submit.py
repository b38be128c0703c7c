"""`make submit`: predict every test id with test-time augmentation and write a checked submission.

    python -m kit submit --config configs/dogs-vs-cats-redux.yaml [--set submit.run=<run>]

The validation split goes through exactly the same post-processing first (TTA views, clipping,
the label column's direction: label = P(dog)), and its log loss is printed and stored with the
submission, so a flipped label or misaligned ids shows up as a bad score before any upload.
Writes submissions/<run>-<timestamp>.csv and copies it to submission.csv (each through a temporary
name); a check that fails leaves every existing submission untouched.

The validation images scored are the run's own (runs/<run>/split.csv, `RunDir.validation_split`), whatever
data.seed and data.val_fraction say now: another split would score the run on some of its training images.
A run saved before runs kept their split is scored on the index's validation split, and only when its
config.yaml has the same seed and fraction. submission.csv.json records which ("val_split": "run"/"index").
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from kit import paths as kit_paths, timings
from kit.config import Config, with_image_size
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.model import calibrate, device
from kit.model.features import saw_mirrored, with_pooling_of, with_tta
from kit.model.metrics import clip_probabilities, log_loss
from kit.plan.estimate import print_plan, took_line
from kit.runs import RunDir
from kit.submit import members, snapshots
from kit.submit.submission import build_frame, meta_path, validation_score, write_submission


def calibration_line(cal: calibrate.Calibration, n: int) -> str:
    """Every method's out-of-fold validation log loss, its fitted parameter, and the one chosen."""
    def shown(method: str) -> str:
        params = cal.fitted.get(method, {})
        extra = f" (bound {params['bound']:g})" if "bound" in params else (
            f" (T {params['temperature']:.2f})" if "temperature" in params else "")
        loss = f" {cal.out_of_fold[method]:.4f}" if method in cal.out_of_fold else ""
        return f"{method}{'*' if method == cal.method else ''}{loss}{extra}"

    where = (f"{cal.folds}-fold out-of-fold log loss on {n:,} validation images" if cal.folds
             else f"too few validation images per class to cross-validate ({n:,}): not calibrated")
    return f"calibration, {where}: " + ", ".join(shown(m) for m in calibrate.METHODS) + \
        f"; * = chosen, then clipped to [{cal.floor:g}, {1 - cal.floor:g}] (submit.clip)"


def validation_images(cfg: Config, run_dir: RunDir, index) -> tuple[pd.DataFrame, str]:
    """(path, label of the images the run was validated on, "run" or "index"): never another split's.

    The run's split.csv when it has one (each image must still be in the index); for an older run without
    it, the index's validation split, provided the run's saved data.seed and data.val_fraction are cfg's.
    """
    split = run_dir.validation_split()
    if split is not None:
        if not {"path", "label"} <= set(split.columns) or split.empty:
            raise KitError(f"{run_dir.split_file} of run {run_dir.name} is damaged (no path,label rows): retrain "
                           "the run with `make train`, or pick another run with submit.run")
        gone = [path for path in split["path"] if path not in index.indexed_paths]  # limit_per_class aside
        if gone:
            raise KitError(f"run {run_dir.name} was validated on images the index no longer has (e.g. {gone[0]}; "
                           f"{len(gone)} of {len(split)}): rebuild the index of the data it was trained on with "
                           "`make data`, or pick another run with submit.run")
        return split[["path", "label"]].reset_index(drop=True), "run"
    saved = run_dir.saved_config().get("data") or {}
    theirs = {key: saved.get(key) for key in ("seed", "val_fraction")}
    ours = {"seed": cfg.data.seed, "val_fraction": cfg.data.val_fraction}
    if None in theirs.values():
        raise KitError(f"run {run_dir.name} keeps neither split.csv nor data.seed and data.val_fraction in its "
                       f"{run_dir.config_file.name}, so its validation images are unknown: retrain it with "
                       "`make train`, or pick another run with submit.run")
    if theirs != ours:
        def show(values: dict) -> str:
            return " ".join(f"data.{key}={value}" for key, value in values.items())
        raise KitError(f"run {run_dir.name} keeps no split.csv and was trained with {show(theirs)}, not this config's "
                       f"{show(ours)}: its validation score here would count its own training images; submit with "
                       f"--set \"{show(theirs)}\" (make: SET=\"{show(theirs)}\")")
    return index.val[["path", "label"]].reset_index(drop=True), "index"


def score_validation(cfg: Config, probabilities: np.ndarray, honest: np.ndarray, labels: np.ndarray,
                     classes: list[str]) -> tuple[dict, calibrate.Calibration]:
    """Validation metrics of the chosen model's probabilities through the submission's own path (the
    calibration, clipping), and the calibration the test set gets.

    `val_log_loss` is out of fold: each image's probability from the snapshot choice made on the other folds
    (`honest`), calibrated by a fit on the other folds, with a bootstrap interval; a score fitted on the images it
    scores would flatter the submission. `val_log_loss_in_sample` is the calibration fitted on all of them, as
    the test set gets it."""
    cal = calibrate.choose(cfg.submit.calibrate, labels, probabilities, cfg.submit.clip, cfg.data.seed)
    print(f"submit: {calibration_line(cal, len(labels))}")
    score = validation_score(labels, cal.apply(probabilities), cfg.submit.clip, classes)
    # The snapshot choice's own held-fold probabilities, calibrated fold by fold too (for best.keras they are
    # `probabilities` themselves: nothing to fit again).
    fair = cal if honest is probabilities else calibrate.choose(cal.method, labels, honest, cfg.submit.clip,
                                                                cfg.data.seed)
    out_of_fold = fair.honest(honest)
    low, high = calibrate.interval(labels, out_of_fold, seed=cfg.data.seed)
    score.update(val_log_loss_in_sample=score["val_log_loss"], val_log_loss=log_loss(labels, out_of_fold),
                 val_log_loss_interval=[round(low, 5), round(high, 5)], calibration=cal.as_dict(),
                 val_log_loss_raw=log_loss(labels, probabilities))
    return score, cal


def refit_model(cfg: Config, run_dir: RunDir, model) -> tuple[RunDir, object, dict | None]:
    """(folder, model, its summary) that predicts the test set: the run's refit on every labelled image
    (train.refit_all, kit/train/refit.py) when it has a finished one and submit.refit is on, else the run."""
    refit = run_dir.refit
    if not cfg.submit.refit or not refit.is_finished():
        return run_dir, model, None
    summary = refit.summary()
    print(f"submit: {run_dir.name} predicts the test set through its refit on all {summary.get('train_images', 0):,} "
          f"labelled images ({refit.path}; submit.refit=false: the split model), which has no held-out score of its "
          f"own: the validation scores printed are the split model's")
    return refit, refit.load_model()[0], summary


def run(cfg: Config) -> Path:
    """Write the submission for the chosen run; return the archived CSV's path."""
    index = load_index(cfg)
    if index.test is None or index.sample_submission is None:
        raise KitError("this dataset has no test images and sample_submission.csv: nothing to submit "
                       "(use `make predict` for your own images)")
    run_dir = RunDir.find(cfg)
    val, val_split = validation_images(cfg, run_dir, index)  # before the slow part: a refusal costs nothing
    runs = members.runs_to_average(cfg, run_dir, val)
    timings.reset()
    with timings.step("set-up"):
        device.for_prediction(cfg)
        model, classes = run_dir.load_model()
    if classes != index.classes:
        raise KitError(f"run {run_dir.name} was trained on classes {classes}, the index has {index.classes}: "
                       f"pick a run of this dataset with submit.run")
    at_size = with_image_size(cfg, run_dir.image_size(model))  # e.g. a head-only run at its features' size
    at_size = with_tta(with_pooling_of(at_size, model), saw_mirrored(run_dir))  # [auto]: hflip if trained on flips
    print(f"submit: run {run_dir.name} at {at_size.data.image_size} px, TTA views {at_size.submit.tta}, "
          f"clip {cfg.submit.clip}" + (f", averaged with its {len(runs) - 1} train.members" if len(runs) > 1 else ""))
    from_features = run_dir.is_head_only_on_features()
    planned = [at_size.train.members[n - 1] for n in members.member_numbers(cfg, run_dir)
               if n <= len(at_size.train.members)]  # the members the run trained, not the config's list
    steps = print_plan(replace(at_size, train=replace(at_size.train, members=planned)), index, "submit", from_features,
                       snapshots=len(snapshots.usable(at_size, run_dir, from_features)))
    labels, test = val["label"].to_numpy(), list(index.test["path"])
    predicted = []
    for each in runs[1:]:
        print(f"submit: member {each.name} ({each.path}), averaged with the run")
    for each in runs:  # the run's own model is loaded already
        predicted.append(members.predict_run(cfg, each, classes, list(val["path"]), labels, test, refit_model,
                                             (model, classes) if each == run_dir else None))
    weighting, weighted, val_probabilities, val_out_of_fold, test_probabilities = members.average(
        predicted, labels, cfg.submit.clip, cfg.data.seed, cfg.submit.member_weights)
    for p in predicted:
        p.val_log_loss = log_loss(labels, clip_probabilities(p.choice.val, cfg.submit.clip)[0])
    if len(runs) > 1:
        print("submit: members' validation log loss (raw, floored): " + ", ".join(
            f"{p.run.name} {p.val_log_loss:.4f}" for p in predicted) + "; averaged (mean logit): " + ", ".join(
            f"{name}{'*' if name == weighting else ''} {loss:.4f}" for name, loss in weighted.items()) +
            " (* = chosen; out of fold below)")
    score, cal = score_validation(cfg, val_probabilities, val_out_of_fold, labels, classes)
    low, high = score["val_log_loss_interval"]
    print(f"submit: validation log loss {score['val_log_loss']:.4f} (95% interval {low:.4f}-{high:.4f}; "
          f"{'out of fold, ' if cal.folds else ''}after TTA and {cal.method}), accuracy {score['val_accuracy']:.4f} "
          f"on {score['val_rows']} images of the {val_split}'s split (constant prior scores "
          f"{score['val_prior_log_loss']:.4f})")
    test_probabilities = cal.apply(test_probabilities)
    choice, refit = predicted[0].choice, predicted[0].refit
    frame = build_frame(index.test["id"].to_numpy(), test_probabilities, classes)
    timings.close()  # the checks and the table so far; writing the files follows
    meta = {**score, "val_split": val_split, "run": run_dir.name, "tta": list(at_size.submit.tta),
            "competition": cfg.competition.slug, "snapshots": choice.as_dict(), "refit": refit,
            "members": [p.as_dict() for p in predicted[1:]], "member_weighting": {"name": weighting, "val_log_loss": weighted},
            "timings": timings.snapshot(), "plan": steps}
    written = write_submission(frame, index.sample_submission, kit_paths.submissions_dir(cfg), run_dir.name,
                               cfg.submit.clip, extra_meta=meta, latest_path=kit_paths.latest_submission(cfg))
    # the averaged validation probabilities before calibrating (bench/end_to_end.py scores them as the reference's)
    keep_scores(run_dir, {**meta, "members": [p.as_dict() for p in predicted], "submission": str(written),
                          "val_predictions": {"path": list(val["path"]), "label": [int(v) for v in labels],
                                              "prob": np.asarray(val_probabilities).tolist()}})
    record_in_ledger(cfg, run_dir)
    print(f"submit: {took_line(timings.elapsed(), steps)}")
    return written


def keep_scores(run_dir: RunDir, meta: dict) -> None:
    """runs/<run>/submit.json and the report redrawn with it: the snapshots', members' and calibration's
    validation scores beside the run's curves. A failure here is a warning: the submission is written."""
    import json

    from kit.fsutil import write_text_atomic
    from kit.report.html import build_report

    try:
        write_text_atomic(run_dir.submit_scores, json.dumps(meta, indent=2, default=str) + "\n")
        build_report(run_dir)
    except Exception as error:  # noqa: BLE001 — the submission matters more than its table
        print(f"submit: warning: the run's report could not be updated ({error}); retry with `make report`")


def record_in_ledger(cfg: Config, run_dir: RunDir) -> None:
    """One row in submissions/ledger.csv (kit/submit/ledger.py) from the metadata just written beside the
    submission. A failure here is a warning: the submission is written."""
    import json

    from kit.submit import ledger

    try:
        meta = json.loads(meta_path(kit_paths.latest_submission(cfg)).read_text())
        folder = kit_paths.submissions_dir(cfg)
        row = ledger.submission_row(meta, run_dir.saved_config(), run_dir.report)
        path = ledger.append(folder, row)
        ledger.redraw(folder)
        print(f"submit: recorded in {path}; every submission: {folder / 'index.html'}")
    except Exception as error:  # noqa: BLE001 — the submission matters more than its ledger row
        print(f"submit: warning: the submission could not be recorded in the ledger ({error})")
