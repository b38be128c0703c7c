"""train.refit_all: after the split run, the same recipe on train + validation in runs/<run>/refit; submit predicts
the test set with it (the split's snapshot choice and calibration); an interrupted refit continues alone."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kit import paths
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.model import features, inference
from kit.runs import RunDir
from kit.submit import submit
from kit.train import fit, refit
from tests.model.test_features import fixed_weights
from tests.submit.test_submit import outputs, scored  # noqa: F401  (a fixture)


@pytest.fixture
def head_only(indexed, competition_zip, tmp_path):
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=3", "train.finetune_epochs=0", "train.feature_passes=1",
                   "train.refit_all=true", "train.run_name=whole", "submit.tta=[original]")


def test_a_head_only_refit_trains_on_every_labelled_image_and_submit_predicts_with_it(head_only, monkeypatch):
    index, seen = load_index(head_only), []
    real = refit.fit_head

    def spy(cfg, model, train_xy, val_xy, run_dir, n_classes, **kw):
        seen.append((train_xy, val_xy, run_dir))
        return real(cfg, model, train_xy, val_xy, run_dir, n_classes, **kw)

    monkeypatch.setattr(refit, "fit_head", spy)
    run = RunDir(fit.run(head_only))
    (x, y), val_xy, folder = seen[0]
    n = len(index.train) + len(index.val)
    assert len(seen) == 1 and val_xy is None and folder == run.refit
    assert len(x) == 2 * n and y.sum() == 2 * (index.train["label"].sum() + index.val["label"].sum())  # 2 passes
    split_model, final_model = run.load_model()[0], run.refit.load_model()[0]
    val_features = features.features(head_only, split_model, list(index.val["path"]), "val")
    np.testing.assert_allclose(x[len(index.train):n], val_features)  # validation images' features, trained on now
    assert not all(np.allclose(a, b) for a, b in zip(split_model.get_weights(), final_model.get_weights()))
    summary = run.refit.summary()
    assert summary["train_images"] == n and summary["val_log_loss"] is None and summary["refit_of"] == "whole"
    logged = pd.read_csv(run.refit.metrics)
    assert len(logged) == 3 and logged.filter(like="val_").isna().all().all()  # nothing to validate on

    written = submit.run(head_only)
    meta = json.loads(paths.latest_submission(head_only).with_suffix(".csv.json").read_text())
    assert meta["refit"]["train_images"] == n
    test_paths = list(index.test["path"])
    raw = inference.predict_split(head_only, final_model, test_paths, "test", True)
    cal = meta["calibration"]
    expected = np.clip(raw if cal["method"] != "temperature" else
                       1 / (1 + np.exp(-np.log(raw / (1 - raw)) / cal["params"]["temperature"])), 1e-4, 1 - 1e-4)
    if cal["method"] == "clip":
        expected = np.clip(expected, cal["params"]["bound"], 1 - cal["params"]["bound"])
    np.testing.assert_allclose(pd.read_csv(written)["label"], expected, atol=2e-5)  # the refit's predictions

    head_only.submit.refit = False  # the split model instead
    submit.run(head_only)
    meta = json.loads(paths.latest_submission(head_only).with_suffix(".csv.json").read_text())
    assert meta["refit"] is None


def test_an_interrupted_refit_continues_alone_and_leaves_the_split_run_whole(head_only, monkeypatch):
    real = refit.fit_head

    def broken(*args, **kw):
        raise KitError("disk gone")

    monkeypatch.setattr(refit, "fit_head", broken)
    with pytest.raises(KitError, match="disk gone"):
        fit.run(head_only)
    run = paths.runs_dir(head_only) / "whole"
    run_dir = RunDir(run)
    assert run_dir.is_finished() and not run_dir.is_done()
    kept = {name: (run / name).read_bytes() for name in ("best.keras", "metrics.csv", "summary.json")}
    submit.run(head_only)  # the split run submits meanwhile
    before = outputs(head_only)
    assert json.loads(paths.latest_submission(head_only).with_suffix(".csv.json").read_text())["refit"] is None

    monkeypatch.setattr(refit, "fit_head", real)
    fit.run(head_only)  # the same command again: the refit only
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert run_dir.refit.is_finished() and run_dir.is_done()
    assert outputs(head_only) == before  # training never touches a submission
    with pytest.raises(KitError, match="already finished"):
        fit.run(head_only)


@pytest.mark.slow
def test_a_fine_tuned_refit_keeps_the_splits_best_epoch_and_snapshots(indexed, competition_zip, scored):
    cfg = indexed(competition_zip, "train.head_epochs=1", "train.finetune_epochs=3", "train.cycle_epochs=1",
                  "train.cycle_mult=2", "submit.tta=[original]", "train.refit_all=true", "train.run_name=ft")
    assert features.refits(cfg) and cfg.train.refit_all is True
    run = RunDir(fit.run(cfg))
    best_epoch = run.summary()["best_epoch"]
    final = run.refit
    expected = sorted({2, 4} | ({best_epoch} if best_epoch > 1 else set()))
    assert [epoch for epoch, _ in final.snapshots()] == expected
    assert list(pd.read_csv(final.metrics)["epoch"]) == [0, 1, 2, 3] and final.summary()["best_epoch"] == best_epoch
    model = final.load_model()[0]
    if best_epoch > 1:  # best.keras of the refit: its weights at the split's best epoch
        saved = [w.copy() for w in model.get_weights()]
        model.load_weights(final.snapshot(best_epoch))
        for a, b in zip(saved, model.get_weights()):
            np.testing.assert_array_equal(a, b)
    submit.run(cfg)
    meta = json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())  # predictions faked:
    assert meta["refit"]["run"] == "refit" and meta["snapshots"]["name"] in ("last_1", "last_2")  # the tiny model is weak


@pytest.mark.parametrize("overrides, refits", [
    (["train.refit_all=auto", "train.head=features", "train.head_epochs=2", "train.finetune_epochs=0"], True),
    (["train.refit_all=auto", "train.finetune_epochs=3"], False),  # it would double a fine-tune's training
    (["train.refit_all=true", "train.finetune_epochs=3"], True),
    (["train.refit_all=false", "train.head=features", "train.head_epochs=2", "train.finetune_epochs=0"], False),
])
def test_refit_all_auto_refits_head_only_runs(overrides, refits):
    from kit.config import load_config

    assert features.refits(load_config(None, overrides)) is refits
