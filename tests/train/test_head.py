"""Stage 1 on cached features: a head-only run writes the run contract with a full pixel model; the head learns."""
import json

import numpy as np
import pandas as pd
import pytest

from kit import paths as kit_paths
from kit.config import load_config
from kit.data.dataset import load_index
from kit.data import pipeline
from kit.errors import KitError
from kit.model import features
from kit.model.backbones import build_model
from kit.model.inference import predict_views
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.train import fit
from kit.train.head import fit_head
from tests.model.test_features import fixed_weights, no_computing


@pytest.fixture
def head_only(indexed, competition_zip, tmp_path):
    """The synthetic competition indexed; small_cnn at 32 px with fixed weights; 4 head epochs on features."""
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=4", "train.finetune_epochs=0", "train.feature_passes=1",
                   "train.run_name=pre")


def test_a_head_only_run_writes_the_run_contract_and_a_full_pixel_model(head_only, monkeypatch):
    index = load_index(head_only)
    run_dir = RunDir(fit.run(head_only))
    for path in (run_dir.best_model, run_dir.metrics, run_dir.lr, run_dir.val_predictions, run_dir.summary_file,
                 run_dir.config_file, run_dir.classes_file, run_dir.report):
        assert path.is_file(), path.name
    metrics = pd.read_csv(run_dir.metrics)
    assert {"epoch", "loss", "accuracy", "log_loss", "val_loss", "val_accuracy", "val_log_loss", "lr",
            "stage"} <= set(metrics.columns)
    assert list(metrics["epoch"]) == [0, 1, 2, 3] and set(metrics["stage"]) == {1}
    steps_per_epoch = int(np.ceil(2 * len(index.train) / head_only.data.batch_size))  # original + 1 augmented pass
    lr = pd.read_csv(run_dir.lr)
    assert list(lr["step"]) == list(range(4 * steps_per_epoch)) and lr["lr"].iloc[0] == pytest.approx(1e-3)
    # One cosine cycle over all head epochs (no restart: the head on fixed features has nothing to escape).
    assert (np.diff(lr["lr"]) < 0).all() and lr["lr"].iloc[-1] < 0.1 * 1e-3
    summary = json.loads(run_dir.summary_file.read_text())
    # the last epoch, the end of the one cosine cycle: no epoch is picked on the images it is then scored on
    assert summary["val_log_loss"] == pytest.approx(metrics["val_log_loss"].iloc[-1], rel=1e-5)
    assert summary["best_epoch"] == 4
    assert summary["train_images"] == len(index.train) and summary["head"] == "features"
    assert summary["finetune_epochs"] == 0 and summary["feature_passes"] == 1
    assert run_dir.is_head_only_on_features()

    # best.keras is the whole model: pixels in, the same probabilities as the features path, with TTA.
    model, classes = run_dir.load_model()
    assert classes == ["cat", "dog"] and model.input_shape == (None, 32, 32, 3)
    paths = list(index.val["path"])
    pixels = predict_views(head_only, model, pipeline.load_images(head_only, paths, "val"), paths, ["original", "hflip"])
    frame = pd.read_csv(run_dir.val_predictions)
    assert list(frame["path"]) == paths and list(frame.columns) == ["path", "label", "class_name", "prob"]
    np.testing.assert_allclose(frame["prob"], pixels, atol=1e-5)
    assert summary["val_log_loss_tta"] == pytest.approx(log_loss(frame["label"], frame["prob"]), rel=1e-6)

    # The best epoch's head is what was saved, not the last one.
    x_val = features.features(head_only, model, paths, "val")
    head = features.head_model(model)
    head.compile(loss="binary_crossentropy")
    assert head.evaluate(x_val, frame["label"].to_numpy(np.float32)[:, None], verbose=0) == pytest.approx(
        summary["val_log_loss"], rel=1e-4)

    monkeypatch.setattr(features, "_compute", no_computing)  # a second run reuses every feature file
    head_only.train.run_name = "again"
    assert RunDir(fit.run(head_only)).is_finished()


def test_fit_head_learns_separable_features(head_only, tmp_path):
    """On features that carry the label, the head gets a low validation log loss within 10 epochs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.float32)[:, None]
    head_only.train.head_epochs, head_only.train.head_lr, head_only.data.batch_size = 10, 1e-2, 32
    model = build_model(head_only, 2)
    best = fit_head(head_only, model, (x[:2400], y[:2400]), (x[2400:], y[2400:]), RunDir(tmp_path), 2)
    assert best.best < 0.25 and 1 <= best.best_epoch <= 10
    assert best.weights is not None  # kept in memory, not a file per epoch
    assert not RunDir(tmp_path).best_model.exists()


def test_bad_head_settings_are_one_line_errors_before_anything_is_written(head_only, tmp_path):
    runs = kit_paths.runs_dir(head_only)
    head_only.train.head_epochs = 0
    with pytest.raises(KitError, match="nothing to train"):
        fit.run(head_only)
    head_only.train.head_epochs = 4
    for overrides, message in [(["train.feature_passes=1", "augment.enabled=false"], "needs augmentation"),
                               (["train.feature_passes=1", "train.head=images"], "set train.head=features"),
                               (["train.feature_image_size=8"], "feature_image_size' must be 0 .* or at least 32"),
                               (["train.precompute=true"], "replaced: a head-only run .* train.finetune_epochs=0"),
                               (["train.precompute_passes=2"], "replaced: .* train.feature_passes")]:
        with pytest.raises(KitError, match=message):
            load_config(None, overrides)
    assert not runs.exists()  # refused before a run folder was made
    assert not (kit_paths.cache_dir(head_only) / "features").exists()  # nor a feature computed
