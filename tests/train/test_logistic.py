"""train.head_solver=logistic: the head on features solved exactly, C chosen in the training images, folded into
the model's own head_out layer; submit.tta=[auto]; the avg_max pooling its features come from."""
import json

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from kit import paths as kit_paths
from kit.config import load_config
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.model import features
from kit.model.backbones import build_model
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.train import fit
from kit.train.logistic import C_GRID, fit_logistic, standardised, uses_logistic
from kit.train.recipe import label_array
from tests.model.test_features import fixed_weights


@pytest.fixture
def logistic_run(indexed, competition_zip, tmp_path):
    """The synthetic competition; small_cnn at 32 px, fixed weights, a head-only run with the logistic head."""
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=4", "train.finetune_epochs=0", "train.head_solver=auto",
                   "model.pooling=avg_max", "train.refit_all=true", "submit.tta=[auto]", "train.run_name=lg")


def separable(n: int, dim: int, n_classes: int, seed: int = 0):
    """Feature vectors whose class a linear rule decides, with noise; offset and scaled unevenly on purpose (the
    standardisation must be folded into the weights correctly)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    labels = (x[:, :n_classes] + rng.normal(scale=0.5, size=(n, n_classes))).argmax(axis=1) if n_classes > 2 \
        else (x[:, :3].sum(axis=1) + rng.normal(scale=0.5, size=n) > 0).astype(int)
    x = x * rng.uniform(0.1, 10.0, size=dim) + rng.uniform(-5, 5, size=dim)
    return x.astype(np.float32), labels


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_fitted_regression_is_the_models_own_head(logistic_run, tmp_path, n_classes):
    x, labels = separable(600, 24, n_classes)
    small = keras.Sequential([keras.Input((24,)), keras.layers.Dense(1 if n_classes == 2 else n_classes,
                              activation="sigmoid" if n_classes == 2 else "softmax", name="head_out")])
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    best = fit_logistic(logistic_run, small, (x[:480], label_array(labels[:480], n_classes)),
                        (x[480:], label_array(labels[480:], n_classes)), run_dir, n_classes)
    # the C searched in the training rows only, every grid value scored, the lowest one kept
    table = pd.read_csv(run_dir.path / "logistic_c.csv")
    assert list(table["C"]) == pytest.approx(list(C_GRID))
    assert best.c == pytest.approx(table.loc[table["oof_log_loss"].idxmin(), "C"])
    # the Keras head gives scikit-learn's probabilities on the standardised vectors: the folding is exact
    mean, scale = standardised(x[:480])
    reference = LogisticRegression(C=best.c, max_iter=500, tol=1e-4).fit((x[:480] - mean) / scale, labels[:480])
    expected = reference.predict_proba((x[480:] - mean) / scale)
    got = keras.ops.convert_to_numpy(small(x[480:]))
    np.testing.assert_allclose(got[:, 0] if n_classes == 2 else got, expected[:, 1] if n_classes == 2 else expected,
                               atol=2e-3)
    metrics = pd.read_csv(run_dir.metrics)
    assert len(metrics) == 1 and metrics["val_log_loss"].iloc[0] == pytest.approx(best.best)
    assert best.best < 0.6 * np.log(n_classes) and metrics["val_accuracy"].iloc[0] > 0.7  # far below the prior


def test_a_fixed_c_skips_the_search(logistic_run, tmp_path):
    x, labels = separable(300, 8, 2, seed=1)
    small = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid", name="head_out")])
    logistic_run.train.logistic_c = 0.5
    run_dir = RunDir(tmp_path)
    best = fit_logistic(logistic_run, small, (x, label_array(labels, 2)), None, run_dir, 2)
    assert best.c == 0.5 and not (tmp_path / "logistic_c.csv").exists() and best.best == np.inf


def test_a_head_only_logistic_run_end_to_end(logistic_run):
    index = load_index(logistic_run)
    run_dir = RunDir(fit.run(logistic_run))
    summary = json.loads(run_dir.summary_file.read_text())
    assert summary["logistic_c"] in C_GRID and summary["tta"] == ["original"]  # never trained on a mirrored photo
    assert summary["best_epoch"] == 1 and np.isfinite(summary["val_log_loss"])
    # the pixel model gives the scores the features did: the validation predictions are its own
    model, _ = run_dir.load_model()
    assert model.get_layer("head_pool").output.shape[-1] == 2 * model.get_layer("head_pool").input.shape[-1]
    frame = pd.read_csv(run_dir.val_predictions)
    pixels = keras.ops.convert_to_numpy(model.predict(np.stack([np.asarray(keras.utils.load_img(p, target_size=(32, 32)))
                                                                for p in index.val["path"]]).astype(np.float32),
                                                      verbose=0))[:, 0]
    assert log_loss(frame["label"], frame["prob"]) == pytest.approx(summary["val_log_loss"], rel=1e-4)
    assert np.corrcoef(pixels, frame["prob"])[0, 1] > 0.9  # PIL's resize differs a little from kit's decoder
    # the refit on every labelled image keeps the split's C: the recipe fixed on the split, no new search
    refit = RunDir(run_dir.path / "refit")
    assert refit.is_finished() and not (refit.path / "logistic_c.csv").exists()
    assert refit.saved_config()["train"]["logistic_c"] == summary["logistic_c"]
    # submit with submit.tta=[auto] predicts the one view the run was trained on, through the refit
    from kit.submit import submit
    from kit.submit.submission import meta_path

    written = submit.run(logistic_run)
    meta = json.loads(meta_path(kit_paths.latest_submission(logistic_run)).read_text())
    assert meta["tta"] == ["original"] and meta["refit"] and len(pd.read_csv(written)) == len(index.test)


def test_auto_is_logistic_only_for_a_head_only_run_and_bad_combinations_are_refused(logistic_run):
    assert uses_logistic(logistic_run)
    fine_tuned = load_config(None, ["train.head=features", "train.head_solver=auto", "train.finetune_epochs=3"])
    assert not uses_logistic(fine_tuned)  # fine-tuning starts from the Adam head it was measured with
    runs = kit_paths.runs_dir(logistic_run)
    for overrides, message in [(["train.head_solver=logistic", "train.head=images"], "solves one Dense layer"),
                               (["train.head_solver=logistic", "train.head=features", "model.dense_units=8"],
                                "model.dense_units=0"),
                               (["submit.tta=[auto, hflip]"], "use submit.tta=\\[auto\\] alone"),
                               (["model.pooling=concat"], "model.pooling")]:
        with pytest.raises(KitError, match=message):
            load_config(None, overrides)
    assert not runs.exists()


def test_auto_tta_follows_what_the_model_was_trained_on():
    cases = [({"head": "features", "finetune_epochs": 0, "feature_passes": 0}, {"flip": True}, ["original"]),
             ({"head": "features", "finetune_epochs": 0, "feature_passes": 2}, {"flip": True}, ["original", "hflip"]),
             ({"head": "features", "finetune_epochs": 3}, {"flip": True}, ["original", "hflip"]),
             ({"head": "images", "finetune_epochs": 0}, {"flip": True}, ["original", "hflip"]),
             ({"head": "images", "finetune_epochs": 3}, {"flip": False}, ["original"]),
             ({"head": "images", "finetune_epochs": 3}, {"enabled": False, "flip": True}, ["original"])]
    cfg = load_config(None, ["submit.tta=[auto]"])
    for train, augment, views in cases:
        assert features.with_tta(cfg, features.mirrored_in_training(train, augment)).submit.tta == views, (train, augment)
    listed = load_config(None, ["submit.tta=[original, zoom]"])
    assert features.with_tta(listed, False).submit.tta == ["original", "zoom"]  # a list is kept as given


def test_avg_max_pooling_is_both_side_by_side_and_saves_with_the_model(logistic_run, tmp_path):
    model = build_model(logistic_run, 3)
    extractor = features.feature_extractor(model)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    maps = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("head_pool").input)(x))
    pooled = keras.ops.convert_to_numpy(extractor(x))
    np.testing.assert_allclose(pooled, np.concatenate([maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))], axis=1),
                               rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)


def test_feature_pooling_is_a_head_only_runs_own_and_submit_reads_it_from_the_model(logistic_run):
    head_only = load_config(None, ["train.head=features", "train.finetune_epochs=0", "train.feature_pooling=avg_max"])
    fine_tuned = load_config(None, ["train.head=features", "train.finetune_epochs=3", "train.feature_pooling=avg_max"])
    assert features.run_config(head_only).model.pooling == "avg_max" and head_only.model.pooling == "avg"
    assert features.run_config(fine_tuned).model.pooling == "avg"  # a fine-tune keeps model.pooling
    model = build_model(logistic_run, 2)  # avg_max
    assert features.with_pooling_of(fine_tuned, model).model.pooling == "avg_max"
    assert features.with_pooling_of(logistic_run, model) is logistic_run


def test_members_resolve_auto_tta_for_themselves(logistic_run, monkeypatch):
    """A fine-tuned run averages flips; its head-only member, trained on un-mirrored features, must not."""
    handed = []
    monkeypatch.setattr(fit, "train_members", lambda cfg, run_dir, run: handed.append(cfg))
    logistic_run.train.finetune_epochs, logistic_run.train.members = 1, ["train.finetune_epochs=0"]
    summary = json.loads(RunDir(fit.run(logistic_run)).summary_file.read_text())
    assert summary["tta"] == ["original", "hflip"] and handed[0].submit.tta == ["auto"]
    from kit.train.members import with_overrides

    member = features.run_config(with_overrides(handed[0], 1))
    assert member.submit.tta == ["original"] and member.model.pooling == "avg_max"
