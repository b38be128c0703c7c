"""Backbone registry, head, in-model preprocessing, BatchNorm freezing, layer groups, save/load."""
from __future__ import annotations

import re
import typing

import keras
import numpy as np
import pytest

from kit.config import load_config
from kit.errors import KitError
from kit.model.backbones import (BACKBONE, BACKBONES, PREPROCESSING, CaffePreprocessing, backbone_blocks,
                                 blocks_ending_at, build_model, layer_groups, named_blocks, set_backbone_trainable)


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


def test_the_config_offers_exactly_the_registered_backbones():
    from kit.config import BACKBONE_NAMES

    assert set(typing.get_args(BACKBONE_NAMES)) == set(BACKBONES)


def test_block_rules_name_each_layer_block():
    names = ["input", "stem_conv", "block1_conv", "block1_bn", "conv2d_9", "block12_conv", "top"]
    assert named_blocks(r"block\d+(?=_)")(names) == \
        ["stem", "stem", "block1", "block1", "block1", "block12", "block12"]  # unnamed layers join the block before
    assert named_blocks(r"conv_(?:dw|pw)_(\d+)")(["conv1", "conv_dw_3", "conv_pw_3", "conv_dw_13"]) == \
        ["stem", "3", "3", "13"]  # a group names the block: dw and pw of block 3 together
    assert blocks_ending_at(r"mixed\d+$")(["c1", "c2", "mixed0", "c3", "mixed9_0", "mixed1", "c4"]) == \
        ["block0", "block0", "block0", "block1", "block1", "block1", "block2"]


def block_of_variable(groups, block_of) -> dict[str, set[int]]:
    """{block: the indices of the groups holding its variables}."""
    where: dict[str, set[int]] = {}
    for i, group in enumerate(groups):
        for v in group:
            where.setdefault(block_of(v.path.split("/")[0]), set()).add(i)
    return where


def assert_each_variable_once(model, groups):
    flat = [v.path for g in groups for v in g]
    assert flat == [v.path for v in model.trainable_variables]  # in layer order, each exactly once


def test_small_cnn_groups_are_whole_blocks():
    model = build_model(make_cfg(), 2)
    set_backbone_trainable(model, True, freeze_batchnorm=False)
    assert [(name, [layer.name for layer in layers]) for name, layers in backbone_blocks(model)] == \
        [(f"block{i}", [f"block{i}_conv", f"block{i}_bn"]) for i in (1, 2, 3)]
    for n in (2, 3, 4):
        groups = layer_groups(model, n)
        assert len(groups) == n and all(groups)
        assert_each_variable_once(model, groups)
        split = {b: g for b, g in block_of_variable(groups[:-1], lambda name: name.split("_")[0]).items() if len(g) > 1}
        assert not split, f"blocks split across groups: {split}"
    groups = layer_groups(model, 4)
    assert [sorted({v.path.split("_")[0] for v in g}) for g in groups[:-1]] == [["block1"], ["block2"], ["block3"]]
    with pytest.raises(KitError, match="4 backbone groups but backbone small_cnn has 3 blocks: give at most 4 ratios"):
        layer_groups(model, 5)


def test_a_block_whose_layers_are_apart_takes_the_layers_between():
    model = build_model(make_cfg(), 2)
    rule = named_blocks(r"block(\d)")
    odd_even = lambda names: ["x" if label in ("1", "3") else label for label in rule(names)]  # noqa: E731
    assert [name for name, _ in backbone_blocks(model, odd_even)] == ["x"]  # block 2 sits inside x: all one block
    assert len(backbone_blocks(model, odd_even)[0][1]) == 6


def test_mobilenet_v2_is_cut_only_between_its_blocks():
    model = build_model(make_cfg("mobilenet_v2"), 2)
    set_backbone_trainable(model, True)
    pattern = re.compile(r"block_\d+(?=_)|expanded_conv|Conv_1(?=_|$)")  # keras' MobileNetV2 layer names

    def block_of(name: str) -> str:
        match = pattern.match(name)
        return match.group(0) if match else "stem"

    assert len(backbone_blocks(model)) == 19  # stem, expanded_conv, block_1 .. block_16, Conv_1
    for n in range(2, 8):
        groups = layer_groups(model, n)
        assert len(groups) == n and all(groups)
        assert_each_variable_once(model, groups)
        where = block_of_variable(groups[:-1], block_of)
        assert all(len(g) == 1 for g in where.values()), {b: g for b, g in where.items() if len(g) > 1}
        firsts = [block_of(g[0].path.split("/")[0]) for g in groups[:-1]]
        assert firsts[0] == "stem" and len(set(firsts)) == n - 1


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_has_blocks_and_groups_that_hold_each_variable_once(name):
    model = build_model(make_cfg(name, max(BACKBONES[name].min_size, 32)), 2)
    set_backbone_trainable(model, True)
    blocks = backbone_blocks(model)
    owners = [layer.name for layer in model.get_layer(BACKBONE).layers if layer.weights]
    assert [layer.name for _, layers in blocks for layer in layers] == owners  # every weight owner, in order, once
    assert len({block for block, _ in blocks}) == len(blocks) and len(blocks) >= 3
    if name != "small_cnn":
        assert len(blocks) < len(owners) / 1.5, "the registry's block rule found no multi-layer blocks"
    groups = layer_groups(model, 4)
    assert_each_variable_once(model, groups)
    block_of = {layer.name: block for block, layers in blocks for layer in layers}
    where = block_of_variable(groups[:-1], block_of.__getitem__)
    assert all(len(g) == 1 for g in where.values())


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
