"""Backbones by name, the classification head, BatchNorm handling and layer groups cut at block boundaries.

    python -c "from kit.config import load_config; from kit.model.backbones import build_model; \
build_model(load_config(None, ['model.weights=none']), 2).summary()"

The model takes raw RGB pixels (float32, 0..255) and does its backbone's preprocessing inside,
so a saved or exported model needs nothing but pixels. Its layers, in order: `image` (input),
`preprocess`, `backbone` (a `keras.applications` model, include_top=False), `head_pool`,
`head_dropout`, optional `head_dense` (+ `head_dense_dropout`), `head_out` (1 sigmoid unit = P(last
class) for two classes, else a softmax over the classes).

Every per-backbone fact lives in its BACKBONES entry (as timm's model registry keeps them), including
how its layers form blocks (`blocks`): the unit fine-tuning's layer groups are cut between. A block with
a shortcut from its first layer to its last must be tuned as a whole ("not respecting blocks also
significantly harms the final performance", keras-io's EfficientNet fine-tuning, `unfreeze_model`).
"""
from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from kit.errors import KitError
from kit.model.layers import CaffePreprocessing, GlobalAvgMaxPooling2D

BACKBONE = "backbone"  # the name of the backbone sub-model: model.get_layer(BACKBONE)


def _unit_scale(x):
    """small_cnn's preprocess_input: pixels 0..255 -> 0..1."""
    return x / 255.0


def small_cnn(include_top: bool = False, weights: str | None = None, input_shape=None) -> keras.Model:
    """A tiny from-scratch CNN (with BatchNorm, like the real backbones) for demos and tests."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{i}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    model = keras.Model(inputs, x, name="small_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model


# How each family wants its pixels, as a layer that saves with the model. "none": the backbone
# normalises inside itself (EfficientNet, EfficientNetV2, ConvNeXt: their preprocess_input is a no-op).
PREPROCESSING: dict[str, Callable[[], keras.layers.Layer]] = {
    "tf": lambda: keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess"),
    "caffe": lambda: CaffePreprocessing(name="preprocess"),
    "unit": lambda: keras.layers.Rescaling(1 / 255.0, name="preprocess"),
    "none": lambda: keras.layers.Identity(name="preprocess"),
}


# A block rule: the backbone's layer names, in order -> the block each layer belongs to.
BlockRule = Callable[[list[str]], list[str]]


def each_layer(names: list[str]) -> list[str]:
    """The default rule: no named blocks, every layer a block of its own (cuts between any two)."""
    return list(names)


def named_blocks(pattern: str) -> BlockRule:
    """Blocks named in the layer names: `pattern` (matched at a name's start) gives a layer's block, its
    first group if it has one (e.g. MobileNet's conv_dw_3 and conv_pw_3 are block 3), else the whole
    match. A layer it does not match (a stem, an unnamed shortcut conv) goes with the block before it."""
    regex = re.compile(pattern)

    def blocks(names: list[str]) -> list[str]:
        labels, current = [], "stem"
        for name in names:
            match = regex.match(name)
            if match:
                current = match.group(1) if regex.groups else match.group(0)
            labels.append(current)
        return labels
    return blocks


def blocks_ending_at(pattern: str) -> BlockRule:
    """Blocks that end at a layer matching `pattern` (Inception's `mixedN` concatenations, whose branch
    layers have only generated names): a block is every layer after the previous end, up to its own."""
    regex = re.compile(pattern)

    def blocks(names: list[str]) -> list[str]:
        labels, count = [], 0
        for name in names:
            labels.append(f"block{count}")
            count += bool(regex.match(name))
        return labels
    return blocks


@dataclass(frozen=True)
class Backbone:
    constructor: Callable[..., keras.Model]  # keras.applications-style: include_top, weights, input_shape
    preprocess_input: Callable  # the family's own function; the `preprocessing` layer must match it
    preprocessing: str  # a key of PREPROCESSING
    image_size: int  # the size its ImageNet weights were trained at
    min_size: int = 32
    has_imagenet: bool = True
    blocks: BlockRule = each_layer  # how its layers form blocks, the units layer groups are cut between


_apps = keras.applications
_MOBILENET_BLOCKS = named_blocks(r"conv_(?:dw|pw|pad)_(\d+)")  # conv_dw_N + conv_pw_N: separable block N
_EFFICIENTNET_BLOCKS = named_blocks(r"block\d+[a-z](?=_)|top(?=_)")  # block1a_..., block2b_...; top_conv
_CONVNEXT_BLOCKS = named_blocks(r"convnext_[a-z]+_(stem|downsampling_block_\d+|stage_\d+_block_\d+)")
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(_apps.MobileNetV2, _apps.mobilenet_v2.preprocess_input, "tf", 224,
                             blocks=named_blocks(r"expanded_conv(?=_)|block_\d+(?=_)|Conv_1(?=_|$)")),
    "mobilenet": Backbone(_apps.MobileNet, _apps.mobilenet.preprocess_input, "tf", 224, blocks=_MOBILENET_BLOCKS),
    "mobilenet_075": Backbone(functools.partial(_apps.MobileNet, alpha=0.75), _apps.mobilenet.preprocess_input,
                              "tf", 224, blocks=_MOBILENET_BLOCKS),
    "efficientnet_b0": Backbone(_apps.EfficientNetB0, _apps.efficientnet.preprocess_input, "none", 224,
                                blocks=_EFFICIENTNET_BLOCKS),
    "efficientnetv2_b0": Backbone(_apps.EfficientNetV2B0, _apps.efficientnet_v2.preprocess_input, "none", 224,
                                  blocks=_EFFICIENTNET_BLOCKS),
    "resnet50": Backbone(_apps.ResNet50, _apps.resnet50.preprocess_input, "caffe", 224,
                         blocks=named_blocks(r"conv\d+_block\d+(?=_)")),  # conv3_block2_...
    "inception_v3": Backbone(_apps.InceptionV3, _apps.inception_v3.preprocess_input, "tf", 299, min_size=75,
                             blocks=blocks_ending_at(r"mixed\d+$")),
    "xception": Backbone(_apps.Xception, _apps.xception.preprocess_input, "tf", 299, min_size=71,
                         blocks=named_blocks(r"block\d+(?=_)")),  # its shortcut convs join their block
    "convnext_tiny": Backbone(_apps.ConvNeXtTiny, _apps.convnext.preprocess_input, "none", 224,
                              blocks=_CONVNEXT_BLOCKS),
    "small_cnn": Backbone(small_cnn, _unit_scale, "unit", 64, min_size=8, has_imagenet=False,
                          blocks=named_blocks(r"block\d+(?=_)")),  # block1_conv, block1_bn, ...
}

POOLING: dict[str, Callable[[], keras.layers.Layer]] = {
    "avg": lambda: keras.layers.GlobalAveragePooling2D(name="head_pool"),
    "max": lambda: keras.layers.GlobalMaxPooling2D(name="head_pool"),
    "avg_max": lambda: GlobalAvgMaxPooling2D(name="head_pool"),
}


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name`, or a KitError listing the known names."""
    if name not in BACKBONES:
        raise KitError(f"unknown backbone '{name}' (model.backbone): choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_model(cfg, num_classes: int) -> keras.Model:
    """The backbone named by cfg.model plus a fresh head; takes float32 RGB 0..255 pixels."""
    if num_classes < 2:
        raise KitError(f"a classifier needs at least 2 classes, got {num_classes}: check competition.classes")
    if cfg.model.pooling not in POOLING:
        raise KitError(f"unknown model.pooling '{cfg.model.pooling}': choose one of {', '.join(POOLING)}")
    size = cfg.data.image_size
    entry = get_backbone(cfg.model.backbone)
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = PREPROCESSING[entry.preprocessing]()(inputs)
    backbone = _make_backbone(cfg.model.backbone, entry, size, cfg.model.weights)
    # training=False is what we want but fit() overrides it (keras#20285): see set_backbone_trainable.
    x = backbone(x, training=False)
    x = POOLING[cfg.model.pooling]()(x)
    x = keras.layers.Dropout(cfg.model.dropout, name="head_dropout")(x)
    if cfg.model.dense_units > 0:
        x = keras.layers.Dense(cfg.model.dense_units, activation="relu", name="head_dense")(x)
        x = keras.layers.Dropout(cfg.model.dropout, name="head_dense_dropout")(x)
    binary = num_classes == 2
    outputs = keras.layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax",
                                 dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=f"kit_{cfg.model.backbone}")


def _make_backbone(name: str, entry: Backbone, size: int, weights: str) -> keras.Model:
    """Construct the backbone; "imagenet" comes through Keras' cache ($KERAS_HOME/models)."""
    if size < entry.min_size:
        raise KitError(f"backbone {name} needs data.image_size >= {entry.min_size}, got {size}")
    if weights == "none":
        weights = None
    elif weights == "imagenet" and not entry.has_imagenet:
        raise KitError(f"backbone {name} has no ImageNet weights: set model.weights=none")
    elif weights != "imagenet" and not Path(weights).is_file():
        raise KitError(f"weights file {weights} not found (model.weights): give imagenet, none or an existing file")
    try:
        with warnings.catch_warnings():
            # MobileNets warn for sizes they have no own ImageNet file for; their 224 px weights are the
            # intended ones (train.feature_image_size=256 is chosen, measured, not an accident).
            warnings.filterwarnings("ignore", message=".*will be loaded as the default")
            backbone = entry.constructor(include_top=False, weights=weights, input_shape=(size, size, 3))
    except Exception as error:  # Keras raises bare Exception/ValueError for a failed download or bad file
        if weights == "imagenet" and "fetch failure" in str(error):
            raise KitError(f"cannot download ImageNet weights for {name} (offline?): put Keras' weight file in "
                           f"$KERAS_HOME/models or set model.weights=none") from error
        if isinstance(error, (ValueError, OSError)):
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise KitError(f"cannot build backbone {name} with weights={weights}: {first_line}") from error
        raise
    backbone.name = BACKBONE  # not via the constructor: EfficientNetV2 looks its blocks up by `name`
    return backbone


def _all_layers(layer: keras.layers.Layer):
    # _flatten_layers also finds sub-layers held as attributes, which `.layers` does not list.
    return layer._flatten_layers(include_self=True, recursive=True)


def set_backbone_trainable(model: keras.Model, trainable: bool, freeze_batchnorm: bool = True) -> None:
    """Freeze or unfreeze the backbone; when unfreezing, keep its BatchNorm frozen if asked.

    fit() runs the backbone with training=True even though build_model calls it with
    training=False (keras#20285), so an unfrozen BatchNorm would normalise with batch statistics
    and overwrite the ImageNet moving statistics. A BatchNormalization layer with trainable=False
    always runs in inference mode and leaves its statistics alone. Recompile after calling this.
    """
    backbone = model.get_layer(BACKBONE)
    backbone.trainable = trainable  # cascades to every sub-layer
    if trainable and freeze_batchnorm:
        for layer in _all_layers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def backbone_blocks(model: keras.Model, rule: BlockRule | None = None) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The backbone's weight-owning layers as (block name, layers), in layer order, by its registry entry's
    `blocks` rule (or `rule`); a block whose layers are not contiguous absorbs the layers between them."""
    backbone = model.get_layer(BACKBONE)
    if rule is None:
        entry = BACKBONES.get(model.name.removeprefix("kit_"))  # build_model names it kit_<backbone>
        rule = entry.blocks if entry is not None else each_layer
    labels = rule([layer.name for layer in backbone.layers])
    owners = [(label, layer) for label, layer in zip(labels, backbone.layers) if layer.weights]
    last = {label: i for i, (label, _) in enumerate(owners)}
    blocks, start, end = [], 0, 0
    for i, (label, _) in enumerate(owners):
        end = max(end, last[label])
        if i == end:  # nothing after here belongs to a block seen so far
            blocks.append((owners[start][0], [layer for _, layer in owners[start:i + 1]]))
            start = i + 1
    return blocks


def _cuts(sizes: list[int], n: int) -> list[int]:
    """Where to cut blocks of `sizes` into n contiguous non-empty runs of near-equal total size."""
    cumulative, cuts = np.cumsum(sizes), [0]
    for i in range(1, n):
        candidates = range(cuts[-1] + 1, len(sizes) - (n - i) + 1)  # leave a block for each later run
        cuts.append(min(candidates, key=lambda c: abs(cumulative[c - 1] - i * cumulative[-1] / n)))
    return cuts[1:] + [len(sizes)]


def layer_groups(model: keras.Model, n_groups: int) -> list[list[keras.Variable]]:
    """The model's trainable variables in `n_groups` groups, lowest layers first, head last.

    As fast.ai: the last group is the head (everything outside the backbone) and the backbone is cut
    into `n_groups - 1` contiguous runs of whole blocks (`backbone_blocks`), of near-equal numbers of
    weight-owning layers, so the cuts do not move when BatchNorm is frozen. n_groups=1 puts everything
    in one group. Call it after unfreezing: frozen variables are in no group.
    """
    if n_groups < 1:
        raise KitError(f"the model needs at least one layer group, got {n_groups}: check train.group_lr_ratios")
    if n_groups == 1:
        return [list(model.trainable_variables)]
    blocks, name = backbone_blocks(model), model.name.removeprefix("kit_")
    if n_groups - 1 > len(blocks):
        raise KitError(f"train.group_lr_ratios asks for {n_groups - 1} backbone groups but backbone {name} has "
                       f"{len(blocks)} blocks: give at most {len(blocks) + 1} ratios")
    groups, first = [], 0
    for end in _cuts([len(layers) for _, layers in blocks], n_groups - 1):
        groups.append([v for _, layers in blocks[first:end] for layer in layers for v in layer.trainable_variables])
        first = end
    in_backbone = {id(v) for v in model.get_layer(BACKBONE).trainable_variables}
    groups.append([v for v in model.trainable_variables if id(v) not in in_backbone])
    grouped = [id(v) for group in groups for v in group]
    if len(grouped) != len(set(grouped)) or set(grouped) != {id(v) for v in model.trainable_variables}:
        raise RuntimeError("layer groups do not hold each trainable variable exactly once")  # one would be untuned
    return groups
