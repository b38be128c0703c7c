"""Precomputed features: keyed cache (reused / recomputed), the head-only run, TTA from features."""
import json
import os

import keras
import numpy as np
import pytest

from kit import paths as kit_paths
from kit.data.dataset import load_index
from kit.data import pipeline
from kit.errors import KitError
from kit.model import features
from kit.model.backbones import build_model, small_cnn
from kit.model.inference import predict_views


def fixed_weights(tmp_path, size: int = 32):
    """A small_cnn weights file: a stand-in for ImageNet weights (the features must not change between models)."""
    weights = tmp_path / "small_cnn.weights.h5"
    keras.utils.set_random_seed(0)
    small_cnn(input_shape=(size, size, 3)).save_weights(weights)
    return weights


@pytest.fixture
def tiny(indexed, competition_zip, tmp_path):
    """The synthetic competition indexed, small_cnn at 32 px with fixed weights, a head-only run on features."""
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=4", "train.finetune_epochs=0")


def feature_files(cfg):
    return sorted(p.name for p in (kit_paths.cache_dir(cfg) / "features").glob("*.npy"))


def no_computing(*args, **kwargs):
    raise AssertionError("cached features should have been reused")


def test_features_are_cached_and_keyed_by_every_setting(tiny, monkeypatch):
    index = load_index(tiny)
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
    paths = list(load_index(tiny).train["path"])[:16]
    model = build_model(tiny, 2)
    original = features.features(tiny, model, paths, "train")
    one = features.features(tiny, model, paths, "train", augment_pass=1)
    two = features.features(tiny, model, paths, "train", augment_pass=2)
    assert not np.allclose(one, original) and not np.allclose(one, two)
    for path in (kit_paths.cache_dir(tiny) / "features").glob("train-aug1-*"):
        path.unlink()
    np.testing.assert_allclose(features.features(tiny, model, paths, "train", augment_pass=1), one, atol=1e-5)


def test_predict_views_from_features_equals_pixel_prediction(tiny, monkeypatch):
    index = load_index(tiny)
    paths = list(index.test["path"])
    images = pipeline.load_images(tiny, paths, "test")
    for n_classes in (2, 3):
        model = build_model(tiny, n_classes)
        expected = predict_views(tiny, model, images, paths, ["original", "hflip"])
        got = features.predict_views_from_features(tiny, model, paths, ["original", "hflip"], "test")
        assert got.shape == ((len(paths),) if n_classes == 2 else (len(paths), 3))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    monkeypatch.setattr(features, "_compute", no_computing)  # TTA again: from the cache only
    again = features.predict_views_from_features(tiny, model, paths, ["hflip", "original"], "test")
    np.testing.assert_allclose(again, got, atol=1e-6)


def test_bad_inputs_are_clear_errors_and_leave_no_partial_file(tiny, monkeypatch):
    index = load_index(tiny)
    model = build_model(tiny, 2)
    tiny.data.image_size = 48
    with pytest.raises(KitError, match="takes 32px images but data.image_size is 48"):
        features.features(tiny, model, list(index.val["path"]), "val")
    tiny.data.image_size = 32
    assert not (kit_paths.cache_dir(tiny) / "features").exists()  # refused before anything was computed

    def broken_save(path, array):  # a crash while writing leaves no file under the real name
        open(path, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(features.np, "save", broken_save)
    with pytest.raises(KitError, match=r"cannot write .*cache/features: .*disk full.*paths.cache_dir"):
        features.features(tiny, model, list(index.val["path"]), "val")
    folder = kit_paths.cache_dir(tiny) / "features"
    assert not list(folder.glob("val-*.npy")) and not list(folder.glob(".*"))


def test_run_config_sets_a_head_only_runs_image_size(tiny):
    assert features.is_head_only(tiny) and features.run_config(tiny) is tiny  # feature_image_size 0: as it is
    tiny.train.feature_image_size = 48
    resized = features.run_config(tiny)
    assert resized.data.image_size == 48 and tiny.data.image_size == 32  # a copy: the caller's cfg untouched
    tiny.train.finetune_epochs = 3  # a run that fine-tunes keeps data.image_size for both stages
    assert features.run_config(tiny) is tiny


def test_too_little_space_for_the_feature_cache_is_refused_before_any_forward_pass(tiny, monkeypatch):
    import shutil
    from collections import namedtuple

    index = load_index(tiny)
    model = build_model(tiny, 2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    monkeypatch.setattr(features, "_compute", no_computing)
    with pytest.raises(KitError, match=r"the feature cache for val needs .* free: free space, set paths.cache_dir"):
        features.features(tiny, model, list(index.val["path"]), "val")
    assert not list((kit_paths.cache_dir(tiny) / "features").glob("*.npy"))
