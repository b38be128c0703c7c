"""Typed configuration: defaults in code, a YAML file over them, `--set key=value` over that.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set data.image_size=160

An unknown key or a value of the wrong type is a KitError naming the key. The resolved config,
the library versions and the git commit are saved beside every output (`save_provenance`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import subprocess
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from kit.errors import KitError
from kit.fsutil import write_text_atomic


@dataclass
class PathsConfig:
    data_dir: str = "data"  # downloads, extracted raw data, the index (raw data is never modified)
    cache_dir: str = "cache"  # resized-image caches, keyed by the settings that made them
    runs_dir: str = "runs"  # one folder per training run
    submissions_dir: str = "submissions"  # every submission written, named <run>-<timestamp>.csv
    submission: str = "submission.csv"  # the latest checked submission, what `make upload` sends


@dataclass
class CompetitionConfig:
    slug: str = "dogs-vs-cats-redux-kernels-edition"  # Kaggle slug, or a name for your own dataset
    layout: str = "kaggle-flat"  # kaggle-flat: train/cat.N.jpg; folder: one sub-folder per class
    folder: str = ""  # layout=folder: the folder holding one sub-folder per class
    classes: list[str] = field(default_factory=lambda: ["cat", "dog"])  # kaggle-flat; last = positive
    kaggle_input: str = "/kaggle/input"  # inside a Kaggle Notebook the data is mounted here


@dataclass
class DataConfig:
    image_size: int = 224
    val_fraction: float = 0.2
    seed: int = 42
    batch_size: int = 32
    cache: str = "disk"  # disk | memory | none: where resized images are kept between epochs
    limit_per_class: int = 0  # use at most this many training images per class (0 = all)
    workers: int = 0  # processes for checking images (0 = all cores)


@dataclass
class AugmentConfig:
    enabled: bool = True
    engine: str = "fused"  # fused: flip+rotation+zoom in one XLA-compiled warp (several x faster) | keras_cv: layer chain
    flip: bool = True  # side-on photos: a horizontal flip is still a cat
    rotation_degrees: float = 10.0
    zoom: float = 1.1  # zoom in up to this factor
    brightness: float = 0.1  # fraction of the value range
    contrast: float = 0.1


@dataclass
class ModelConfig:
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"  # imagenet | none | path to a weights file
    pooling: str = "avg"
    dropout: float = 0.2
    dense_units: int = 0  # a hidden layer in the head (0 = none)
    freeze_batchnorm: bool = True  # keep the backbone's BatchNorm in inference mode when unfrozen


@dataclass
class TrainConfig:
    run_name: str = ""  # empty: <config name>-<timestamp>
    resume: bool = True  # continue the newest unfinished run of this config (same config only)
    head_epochs: int = 2  # stage 1: backbone frozen
    head_on_features: bool = False  # stage 1 on cached features instead (head_precompute_epochs, no augmentation)
    head_lr: float = 1e-3
    finetune_epochs: int = 3  # stage 2: backbone unfrozen, layer-group learning rates, SGDR
    lr: float = 1e-3  # the top group's rate in stage 2
    group_lr_ratios: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # first..last
    cycle_epochs: float = 1.0  # SGDR: length of the first cycle
    cycle_mult: float = 2.0  # SGDR: each cycle this many times longer than the last
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    jit_compile: str = "auto"  # auto: on for a GPU/TPU, off on a CPU (XLA made MobileNetV2 ~10x slower here)
    mixed_precision: str = "auto"  # auto: mixed_float16 on a GPU, float32 on a CPU (no gain there)
    precompute: bool = False  # head only, on cached backbone features (fast.ai's precompute=True)
    precompute_passes: int = 0  # extra augmented passes over the training set, cached as features too
    head_precompute_epochs: int = 20  # epochs of the head on cached features (each well under a second)
    precompute_image_size: int = 0  # a precompute run's image size (0: data.image_size); see kit/features.py
    feature_engine: str = "auto"  # cached features and big predictions: auto (TFLite on a CPU, ~2.6x Keras), tflite, keras


@dataclass
class SubmitConfig:
    run: str = ""  # run folder to predict with (empty: the newest run)
    tta: list[str] = field(default_factory=lambda: ["original", "hflip"])
    clip: float = 0.005  # probabilities clipped to [clip, 1 - clip]: log loss punishes certainty
    message: str = ""


@dataclass
class LrFindConfig:
    stage: str = "head"  # head: the head on cached features | finetune: the unfrozen model
    start_lr: float = 1e-6
    end_lr: float = 1.0
    steps: int = 100
    smoothing: float = 0.98  # exponential smoothing of the loss curve
    diverge: float = 4.0  # stop when the smoothed loss exceeds this many times its minimum


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["keras", "saved_model", "tflite", "tflite_float16"])
    tolerance: float = 1e-4  # max |exported - keras| probability on real images, float32 formats
    tolerance_quantized: float = 2e-2  # the same for float16 / dynamic-range quantized TFLite


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    competition: CompetitionConfig = field(default_factory=CompetitionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    name: str = "default"  # set from the config file's name


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at `path`, then `section.key=value` overrides, all checked."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise KitError(f"config file {path} not found: pass an existing file, e.g. configs/demo.yaml")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise KitError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        _merge(cfg, data, str(path))
        cfg.name = path.stem
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise KitError(f"override {item!r} must look like section.key=value, e.g. data.image_size=160")
        _set_key(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "", "--set")
    return cfg


def parse_overrides(items: typing.Iterable[str]) -> list[str]:
    """Split Make-style `SET="a.b=1 c.d=2"` strings into single `key=value` items."""
    return [part for item in items for part in item.split() if part]


def _merge(cfg: Config, data: dict, source: str) -> None:
    for section, values in data.items():
        if section == "name":
            raise KitError(f"config key 'name' in {source} is set from the file name; remove it")
        if not isinstance(values, dict):
            raise KitError(f"config section '{section}' in {source} must be a mapping of keys")
        for key, value in values.items():
            _set_key(cfg, f"{section}.{key}", value, source)


def _set_key(cfg: Config, dotted: str, value: object, source: str) -> None:
    section, _, key = dotted.partition(".")
    sections = [f.name for f in dataclasses.fields(cfg) if f.name != "name"]
    if section not in sections:
        raise KitError(f"unknown config section '{section}' ({source}): known sections are {', '.join(sections)}")
    target = getattr(cfg, section)
    hints = typing.get_type_hints(type(target))
    if key not in hints:
        raise KitError(f"unknown config key '{dotted}' ({source}): known keys in {section} are {', '.join(hints)}")
    setattr(target, key, _coerce(dotted, value, hints[key], source))


def _coerce(dotted: str, value: object, kind: object, source: str) -> object:
    """Return `value` as `kind`, or raise a KitError naming the key. Ints pass as floats, not back."""
    def bad(expected: str) -> KitError:
        return KitError(f"config key '{dotted}' must be {expected}, got {value!r} ({source})")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typing.get_origin(kind) is list:
        (item_kind,) = typing.get_args(kind)
        if isinstance(value, str):  # --set submit.tta=original,hflip
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad(f"a list of {item_kind.__name__}")
        return [_coerce(f"{dotted}[{i}]", v, item_kind, source) for i, v in enumerate(value)]
    raise TypeError(f"unsupported config type {kind} for {dotted}")


def with_image_size(cfg: Config, size: int) -> Config:
    """cfg itself when data.image_size is already `size`, else a deep copy with it set (the caller's cfg untouched)."""
    if cfg.data.image_size == size:
        return cfg
    resized = copy.deepcopy(cfg)
    resized.data.image_size = size
    return resized


def config_dict(cfg: Config) -> dict:
    """The config as plain data, for YAML files and comparisons."""
    return dataclasses.asdict(cfg)


def library_versions() -> dict:
    """Versions of what produced an output, read from package metadata (no heavy imports)."""
    versions = {"python": platform.python_version()}
    for package in ("kit", "tensorflow", "keras", "keras-cv", "numpy", "pandas", "pillow", "kaggle"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["kit"] = versions["kit"] or __import__("kit").__version__
    versions["git_commit"] = git_commit()
    return versions


def git_commit() -> str | None:
    """The commit of the checkout kit runs from (with '+dirty' if it has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def save_provenance(cfg: Config, folder: str | Path) -> Path:
    """Write config.yaml (resolved) and versions.json into `folder`; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_text_atomic(folder / "versions.json", json.dumps(library_versions(), indent=2) + "\n")
    return folder
