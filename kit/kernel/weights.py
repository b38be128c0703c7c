"""Which weight files a config loads, found by building its backbone the way training will.

    python -c "from kit.config import load_config; from kit.kernel.weights import weight_files; \
print(weight_files(load_config('configs/dogs-vs-cats-redux.yaml')))"

keras.applications names its ImageNet files by family, width and the nearest trained size (a MobileNetV2
at 256 px loads the 224 px file). Rather than copy those rules, the backbone is built at every size the
config trains at, and the files Keras' get_file hands back are recorded: exactly what the kernel needs.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

from kit.config import Config
from kit.errors import KitError


def training_sizes(cfg: Config) -> list[int]:
    """The image sizes the backbone is built at: data.image_size, and the head-only size when it differs."""
    return sorted({cfg.data.image_size, cfg.train.feature_image_size or cfg.data.image_size})


def imagenet_files(backbone: str, sizes: list[int]) -> list[Path]:
    """The Keras cache files ($KERAS_HOME/models) that `backbone` with weights=imagenet reads at `sizes`."""
    from keras.src.utils import file_utils

    from kit.model.backbones import get_backbone

    entry = get_backbone(backbone)
    if not entry.has_imagenet:
        raise KitError(f"backbone {backbone} has no ImageNet weights: set model.weights=none")
    seen: list[Path] = []
    real_get_file = file_utils.get_file

    def recording(*args, **kwargs):
        path = real_get_file(*args, **kwargs)
        seen.append(Path(path))
        return path

    with mock.patch.object(file_utils, "get_file", recording), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will be loaded as the default")  # as kit/model/backbones.py
        for size in sizes:
            try:
                entry.constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
            except Exception as error:  # Keras: a bare Exception for a failed download
                raise KitError(f"cannot load the ImageNet weights of {backbone} at {size} px to attach them to the "
                               f"kernel ({str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__}): "
                               "put Keras' weight file in $KERAS_HOME/models (or run `make train` once online)") from None
    return sorted(set(seen))


def weight_files(cfg: Config) -> list[Path]:
    """The files the kernel must be given: none, the config's own weights file, or Keras' ImageNet files; for
    the config and each of its train.members (a member may use another backbone or image size)."""
    from kit.train.members import with_overrides

    files = own_weight_files(cfg)
    for number in range(1, len(cfg.train.members) + 1):
        files += [f for f in own_weight_files(with_overrides(cfg, number)) if f not in files]
    return files


def own_weight_files(cfg: Config) -> list[Path]:
    weights = cfg.model.weights
    if weights == "none":
        return []
    if weights == "imagenet":
        return imagenet_files(cfg.model.backbone, training_sizes(cfg))
    path = Path(weights)
    if not path.is_file():
        raise KitError(f"weights file {weights} not found (model.weights): give imagenet, none or an existing file")
    return [path]
