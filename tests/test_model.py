"""Backbone registry, head, in-model preprocessing, BatchNorm freezing, layer groups, save/load."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from kit.config import load_config
from kit.errors import KitError
from kit.model import (BACKBONE, BACKBONES, PREPROCESSING, CaffePreprocessing, build_model, layer_groups,
                       set_backbone_trainable)


def make_cfg(backbone: str = "small_cnn", size: int = 32, **model):
    overrides = [f"model.backbone={backbone}", "model.weights=none", f"data.image_size={size}"]
    return load_config(None, overrides + [f"model.{k}={v}" for k, v in model.items()])


def pixels(n: int, size: int, seed: int = 0, low: float = 0.0) -> np.ndarray:
    return np.random.RandomState(seed).uniform(low, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_and_preprocesses_like_its_family(name):
    model = build_model(make_cfg(name, max(BACKBONES[name].min_size, 32)), 3)
    size = model.input_shape[1]
    x = pixels(2, size)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer(BACKBONE).count_params() > 0
    inside = keras.Model(model.input, model.get_layer("preprocess").output)
    expected = BACKBONES[name].preprocess_input(x.copy())  # numpy preprocess_input works in place
    np.testing.assert_allclose(inside.predict(x, verbose=0), expected, atol=1e-4)


@pytest.mark.parametrize("mode", sorted(PREPROCESSING))
def test_every_preprocessing_mode_is_used_by_a_backbone(mode):
    assert any(entry.preprocessing == mode for entry in BACKBONES.values())


@pytest.mark.parametrize("backbone", ["small_cnn", "mobilenet_v2"])
def test_head_two_classes_is_one_sigmoid_unit_three_is_softmax(backbone):
    two = build_model(make_cfg(backbone), 2)
    three = build_model(make_cfg(backbone, dense_units=8), 3)
    x = pixels(4, 32)
    p2, p3 = two.predict(x, verbose=0), three.predict(x, verbose=0)
    assert two.get_layer("head_out").activation is keras.activations.sigmoid
    assert three.get_layer("head_out").activation is keras.activations.softmax
    assert p2.shape == (4, 1) and ((p2 > 0) & (p2 < 1)).all()
    assert p3.shape == (4, 3)
    np.testing.assert_allclose(p3.sum(axis=1), 1.0, rtol=1e-5)
    assert three.get_layer("head_dense").units == 8
    assert "head_dense" not in [layer.name for layer in two.layers]
    assert two.input.dtype == "float32" and two.input_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("override, message", [
    ({"backbone": "vgg99"}, "unknown backbone 'vgg99'"),
    ({"pooling": "median"}, "unknown model.pooling 'median'"),
    ({"weights": "imagenet"}, "small_cnn has no ImageNet weights"),
    ({"weights": "/nowhere/w.h5"}, "weights file /nowhere/w.h5 not found"),
])
def test_bad_model_settings_are_one_line_kit_errors(override, message):
    cfg = make_cfg()
    for key, value in override.items():
        setattr(cfg.model, key, value)
    with pytest.raises(KitError, match=message) as caught:
        build_model(cfg, 2)
    assert "\n" not in str(caught.value)


def test_too_small_image_and_one_class_are_kit_errors():
    with pytest.raises(KitError, match="inception_v3 needs data.image_size >= 75"):
        build_model(make_cfg("inception_v3", 32), 2)
    with pytest.raises(KitError, match="at least 2 classes"):
        build_model(make_cfg(), 1)


def test_offline_imagenet_download_failure_says_what_to_do(monkeypatch):
    from keras.src.applications import mobilenet_v2

    def no_network(*args, **kwargs):  # what keras' get_file raises when the URL cannot be fetched
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- no route")

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", no_network)
    cfg = make_cfg("mobilenet_v2", 96, weights="imagenet")
    with pytest.raises(KitError, match=r"cannot download ImageNet weights for mobilenet_v2.*KERAS_HOME"):
        build_model(cfg, 2)


def test_local_weights_file_is_loaded(tmp_path):
    source = build_model(make_cfg(), 2).get_layer(BACKBONE)
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    loaded = build_model(make_cfg(weights=str(path)), 2).get_layer(BACKBONE)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def bn_statistics(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for v in model.get_layer(BACKBONE).non_trainable_variables
            if "moving_" in v.path}


@pytest.mark.parametrize("backbone", ["small_cnn", "mobilenet_v2"])
@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_finetuning_fit_keeps_batchnorm_statistics_only_when_frozen(backbone, freeze_batchnorm):
    model = build_model(make_cfg(backbone), 2)
    set_backbone_trainable(model, True, freeze_batchnorm=freeze_batchnorm)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="binary_crossentropy")
    stats = bn_statistics(model)
    kernel = model.get_layer(BACKBONE).trainable_variables[0]
    kernel_before = kernel.numpy().copy()
    x, y = pixels(8, 32, seed=1, low=100.0), np.array([0, 1] * 4, "float32")  # bright: stats would move
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = bn_statistics(model)
    changed = [p for p, before in stats.items() if not np.array_equal(before, after[p])]
    assert kernel in model.trainable_variables  # the backbone really was being fine-tuned
    if backbone == "small_cnn":  # an untrained MobileNetV2's gradients vanish (~1e-12): nothing to see
        assert not np.allclose(kernel_before, kernel.numpy())
    if freeze_batchnorm:
        assert changed == []
    else:
        # fit ran BatchNorm in training mode despite training=False (deep layers of an untrained
        # MobileNetV2 see ~0 activations, so only count that the statistics did move, first layer first).
        assert changed and changed[0] == next(iter(stats))


def test_freezing_and_unfreezing_the_backbone():
    model = build_model(make_cfg(), 2)
    backbone = model.get_layer(BACKBONE)
    set_backbone_trainable(model, False)
    assert backbone.trainable_variables == []
    assert [v.path for v in model.trainable_variables] == ["head_out/kernel", "head_out/bias"]
    set_backbone_trainable(model, True, freeze_batchnorm=False)
    assert any("bn/gamma" in v.path for v in backbone.trainable_variables)
    set_backbone_trainable(model, True, freeze_batchnorm=True)
    assert backbone.trainable_variables and not any("_bn/" in v.path for v in backbone.trainable_variables)


def test_layer_groups_are_contiguous_cover_everything_and_end_with_the_head():
    model = build_model(make_cfg("mobilenet_v2", dense_units=4), 2)
    set_backbone_trainable(model, True)
    groups = layer_groups(model, 3)
    paths = [[v.path for v in g] for g in groups]
    assert len(groups) == 3 and all(groups)
    assert paths[0][0] == "Conv1/kernel" and paths[1][-1] == "Conv_1/kernel"  # bottom ... top conv
    assert paths[2] == ["head_dense/kernel", "head_dense/bias", "head_out/kernel", "head_out/bias"]
    flat = [p for g in paths for p in g]
    assert flat == [v.path for v in model.trainable_variables]  # in layer order, each exactly once
    assert [v.path for v in layer_groups(model, 1)[0]] == flat


def test_layer_groups_of_a_frozen_backbone_hold_only_the_head():
    model = build_model(make_cfg(), 2)
    set_backbone_trainable(model, False)
    groups = layer_groups(model, 3)
    assert groups[0] == [] and groups[1] == [] and len(groups[2]) == 2
    with pytest.raises(KitError, match="at least one layer group"):
        layer_groups(model, 0)


def test_saved_model_loads_with_equal_outputs_and_frozen_batchnorm(tmp_path):
    model = build_model(make_cfg(dense_units=8), 3)
    set_backbone_trainable(model, True, freeze_batchnorm=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = pixels(4, 32, seed=2)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert [v.path for v in loaded.trainable_variables] == [v.path for v in model.trainable_variables]
    assert not loaded.get_layer(BACKBONE).get_layer("block1_bn").trainable


def test_caffe_preprocessing_layer_saves_and_loads(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, CaffePreprocessing(name="preprocess")(inputs))
    model.save(tmp_path / "caffe.keras")
    loaded = keras.saving.load_model(tmp_path / "caffe.keras")
    x = pixels(2, 8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               keras.applications.resnet50.preprocess_input(x.copy()), atol=1e-4)


@pytest.mark.real
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "mobilenet_075"])
def test_imagenet_weights_load_offline_from_keras_home(keras_home, backbone, monkeypatch):
    from keras.src.utils import file_utils

    def no_download(*args, **kwargs):
        raise AssertionError("Keras tried to download weights instead of using KERAS_HOME")

    monkeypatch.setattr(file_utils, "urlretrieve", no_download)
    pretrained = build_model(make_cfg(backbone, 224, weights="imagenet"), 2).get_layer(BACKBONE)
    fresh = build_model(make_cfg(backbone, 224), 2).get_layer(BACKBONE)
    moving_means = [v.numpy() for v in pretrained.non_trainable_variables if "moving_mean" in v.path]
    assert moving_means and all(np.abs(m).max() > 0 for m in moving_means)  # a fresh BatchNorm has zeros
    first, fresh_first = pretrained.trainable_variables[0].numpy(), fresh.trainable_variables[0].numpy()
    assert first.shape == fresh_first.shape and not np.allclose(first, fresh_first)
