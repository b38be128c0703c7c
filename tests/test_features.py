"""Precomputed features: keyed cache (reused / recomputed), the head-only run, TTA from features."""
import json
import os

import keras
import numpy as np
import pandas as pd
import pytest

from kit import data, download, features, pipeline, predict
from kit.head import fit_head, train_head
from kit import paths as kit_paths
from kit.errors import KitError
from kit.model import build_model, small_cnn
from kit.submission import log_loss


@pytest.fixture
def tiny(cfg, competition_zip, tmp_path):
    """The synthetic competition indexed, small_cnn at 32 px with a fixed weights file (a stand-in for ImageNet)."""
    weights = tmp_path / "small_cnn.weights.h5"
    keras.utils.set_random_seed(0)
    small_cnn(input_shape=(32, 32, 3)).save_weights(weights)
    cfg.data.image_size, cfg.data.batch_size = 32, 8
    cfg.model.backbone, cfg.model.weights = "small_cnn", str(weights)
    cfg.train.precompute, cfg.train.head_precompute_epochs = True, 4
    download.run(cfg, source=str(competition_zip))
    data.run(cfg)
    return cfg


def feature_files(cfg):
    return sorted(p.name for p in (kit_paths.cache_dir(cfg) / "features").glob("*.npy"))


def no_computing(*args, **kwargs):
    raise AssertionError("cached features should have been reused")


def test_features_are_cached_and_keyed_by_every_setting(tiny, monkeypatch):
    index = data.load_index(tiny)
    paths = list(index.train["path"])
    model = build_model(tiny, 2)
    first = features.features(tiny, model, paths, "train")
    images = pipeline.load_images(tiny, paths, "train").astype(np.float32)
    np.testing.assert_allclose(first, features.feature_extractor(model).predict(images, verbose=0), atol=1e-5)
    assert first.shape == (len(paths), 64) and first.dtype == np.float32
    [name] = feature_files(tiny)
    key = json.loads((kit_paths.cache_dir(tiny) / "features" / name).with_suffix(".json").read_text())
    assert key["view"] == "original" and key["images"] == len(paths) and len(key["weights_sha256"]) == 64

    monkeypatch.setattr(features, "_compute", no_computing)
    again = build_model(tiny, 2)  # another model, same backbone weights (new head): same features
    np.testing.assert_array_equal(features.features(tiny, again, paths, "train"), first)
    monkeypatch.undo()

    features.features(tiny, model, paths, "train", "hflip")  # another view
    features.features(tiny, model, paths, "train", augment_pass=1)  # an augmented pass
    tiny.augment.rotation_degrees = 5.0  # other augmentation: the pass again, not the original
    features.features(tiny, model, paths, "train", augment_pass=1)
    monkeypatch.setattr(features, "_compute", no_computing)
    features.features(tiny, model, paths, "train")
    monkeypatch.undo()
    backbone = model.get_layer("backbone")
    kernel = backbone.weights[0]
    kernel.assign(kernel.numpy() * 1.01)  # other weights (e.g. after fine-tuning)
    features.features(tiny, model, paths, "train")
    os.utime(paths[0], ns=(1, 1))  # a changed image
    changed = features.features(tiny, model, paths, "train")
    tiny.train.feature_engine = "keras"  # the other engine: its own file, the same numbers to float precision
    np.testing.assert_allclose(features.features(tiny, model, paths, "train"), changed, atol=1e-5)
    assert len(feature_files(tiny)) == 7
    assert not list((kit_paths.cache_dir(tiny) / "features").glob(".*"))  # no temporary leftovers


def test_augmented_passes_differ_and_repeat(tiny):
    paths = list(data.load_index(tiny).train["path"])[:16]
    model = build_model(tiny, 2)
    original = features.features(tiny, model, paths, "train")
    one = features.features(tiny, model, paths, "train", augment_pass=1)
    two = features.features(tiny, model, paths, "train", augment_pass=2)
    assert not np.allclose(one, original) and not np.allclose(one, two)
    for path in (kit_paths.cache_dir(tiny) / "features").glob("train-aug1-*"):
        path.unlink()
    np.testing.assert_allclose(features.features(tiny, model, paths, "train", augment_pass=1), one, atol=1e-5)


def test_train_head_writes_the_run_contract_and_a_full_pixel_model(tiny, monkeypatch):
    index = data.load_index(tiny)
    tiny.train.precompute_passes = 1
    run = kit_paths.runs_dir(tiny) / "pre"
    run.mkdir(parents=True)
    summary = train_head(tiny, index, run)
    for name in ("best.keras", "metrics.csv", "lr.csv", "val_predictions.csv", "summary.json", "config.yaml",
                 "versions.json", "classes.json"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"epoch", "loss", "accuracy", "log_loss", "val_loss", "val_accuracy", "val_log_loss", "lr",
            "stage"} <= set(metrics.columns)
    assert list(metrics["epoch"]) == [0, 1, 2, 3] and set(metrics["stage"]) == {1}
    steps_per_epoch = int(np.ceil(2 * len(index.train) / tiny.data.batch_size))  # original + 1 augmented pass
    lr = pd.read_csv(run / "lr.csv")
    assert list(lr["step"]) == list(range(4 * steps_per_epoch)) and lr["lr"].iloc[0] == pytest.approx(1e-3)
    # One cosine cycle over all head epochs (no restart: the head on fixed features has nothing to escape).
    assert (np.diff(lr["lr"]) < 0).all() and lr["lr"].iloc[-1] < 0.1 * 1e-3
    assert summary["val_log_loss"] == pytest.approx(metrics["val_log_loss"].min(), rel=1e-5)
    assert summary["best_epoch"] == int(metrics["val_log_loss"].idxmin()) + 1
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    assert summary["train_images"] == len(index.train) and summary["precompute"] is True

    # best.keras is the whole model: pixels in, the same probabilities as the features path, with TTA.
    model, classes = predict.load_run(run)
    assert classes == ["cat", "dog"] and model.input_shape == (None, 32, 32, 3)
    paths = list(index.val["path"])
    pixels = predict.predict_views(tiny, model, pipeline.load_images(tiny, paths, "val"), paths, ["original", "hflip"])
    frame = pd.read_csv(run / "val_predictions.csv")
    assert list(frame["path"]) == paths and list(frame.columns) == ["path", "label", "class_name", "prob"]
    np.testing.assert_allclose(frame["prob"], pixels, atol=1e-5)
    assert summary["val_log_loss_tta"] == pytest.approx(log_loss(frame["label"], frame["prob"]), rel=1e-6)

    # The best epoch's head is what was saved, not the last one.
    x_val = features.features(tiny, model, paths, "val")
    head = features.head_model(model)
    head.compile(loss="binary_crossentropy")
    assert head.evaluate(x_val, frame["label"].to_numpy(np.float32)[:, None], verbose=0) == pytest.approx(
        summary["val_log_loss"], rel=1e-4)

    monkeypatch.setattr(features, "_compute", no_computing)  # a second run reuses every feature file
    second = kit_paths.runs_dir(tiny) / "again"
    second.mkdir()
    train_head(tiny, index, second)


def test_fit_head_learns_separable_features_fast(tiny, tmp_path):
    """On features that carry the label, the head gets a low validation log loss in a fraction of a second."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.float32)[:, None]
    tiny.train.head_precompute_epochs, tiny.train.head_lr, tiny.data.batch_size = 10, 1e-2, 32
    model = build_model(tiny, 2)
    import time
    started = time.time()
    best = fit_head(tiny, model, (x[:2400], y[:2400]), (x[2400:], y[2400:]), tmp_path, 2)
    seconds_per_epoch = (time.time() - started) / 10
    assert best.best < 0.25 and 1 <= best.best_epoch <= 10
    assert seconds_per_epoch < 1.0  # 75 steps of 32: well under a second, even on 2 busy cores


def test_predict_views_from_features_equals_pixel_prediction(tiny, monkeypatch):
    index = data.load_index(tiny)
    paths = list(index.test["path"])
    images = pipeline.load_images(tiny, paths, "test")
    for n_classes in (2, 3):
        model = build_model(tiny, n_classes)
        expected = predict.predict_views(tiny, model, images, paths, ["original", "hflip"])
        got = features.predict_views_from_features(tiny, model, paths, ["original", "hflip"], "test")
        assert got.shape == ((len(paths),) if n_classes == 2 else (len(paths), 3))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    monkeypatch.setattr(features, "_compute", no_computing)  # TTA again: from the cache only
    again = features.predict_views_from_features(tiny, model, paths, ["hflip", "original"], "test")
    np.testing.assert_allclose(again, got, atol=1e-6)


def test_bad_settings_are_clear_errors_and_write_nothing(tiny, monkeypatch):
    index = data.load_index(tiny)
    run = kit_paths.runs_dir(tiny) / "bad"
    run.mkdir(parents=True)
    tiny.train.head_precompute_epochs = 0
    with pytest.raises(KitError, match="head_precompute_epochs above 0"):
        train_head(tiny, index, run)
    tiny.train.head_precompute_epochs, tiny.train.precompute_passes = 2, -1
    with pytest.raises(KitError, match="precompute_passes must be >= 0"):
        train_head(tiny, index, run)
    tiny.train.precompute_passes, tiny.augment.enabled = 1, False
    with pytest.raises(KitError, match="needs augmentation"):
        train_head(tiny, index, run)
    tiny.train.precompute_passes, tiny.augment.enabled = 0, True
    tiny.train.precompute_image_size = 8
    with pytest.raises(KitError, match="precompute_image_size must be 0 .* or at least 32, got 8"):
        features.precompute_config(tiny)
    tiny.train.precompute_image_size = 0
    assert features.precompute_config(tiny) is tiny  # 0: the config as it is
    assert not list(run.iterdir())  # refused before anything was written
    assert not (kit_paths.cache_dir(tiny) / "features").exists()  # nor computed

    model = build_model(tiny, 2)
    tiny.data.image_size = 48
    with pytest.raises(KitError, match="takes 32px images but data.image_size is 48"):
        features.features(tiny, model, list(index.val["path"]), "val")
    tiny.data.image_size = 32

    def broken_save(path, array):  # a crash while writing leaves no file under the real name
        open(path, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(features.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        features.features(tiny, model, list(index.val["path"]), "val")
    folder = kit_paths.cache_dir(tiny) / "features"
    assert not list(folder.glob("val-*.npy")) and not list(folder.glob(".*"))
