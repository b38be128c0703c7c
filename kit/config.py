"""Typed configuration, checked for meaning at load: defaults in code, a YAML file over them, `--set` over that.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set data.image_size=160

Each key is a dataclass field whose type says what it may hold (`Literal[...]` for a choice, `Auto` for
true/false/auto) and whose metadata says its range (`setting(224, min=32)`) and whether changing it
keeps an unfinished run resumable (`resume=False`: it does not change what training computes). Every
failure is one KitError line naming the key, the value and what is allowed, before any image is read.
Keys that were renamed get a line saying what replaced them (`REPLACED`). A run saved before a key was
added is compared as if it had the key's default (`saved_config`, `changed_for_resume`).

Over 300 lines: the schema of every stage's keys is declared here once, each with its type, range and
resume rule, so that no other module defines or checks a key.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from kit.config_values import coerce, read_yaml
from kit.errors import KitError

Auto = Union[bool, Literal["auto"]]  # YAML true/false/on/off/yes/no, or auto: decided by the device
VIEWS = Literal["original", "hflip", "zoom", "zoom_hflip"]  # kit/data/augment.py's TTA_VIEWS
TTA_SETTING = Literal[VIEWS, "auto"]  # submit.tta=[auto]: the views chosen per run (kit/model/features.py: with_tta)
BACKBONE_NAMES = Literal["mobilenet_v2", "mobilenet", "mobilenet_075", "efficientnet_b0", "efficientnetv2_b0",
                         "resnet50", "inception_v3", "xception", "convnext_tiny", "small_cnn"]  # kit/model/backbones.py
EXPORT_FORMATS = Literal["keras", "saved_model", "tflite", "tflite_float16", "tflite_dynamic"]


def setting(default, *, min=None, max=None, above=None, below=None, resume: bool = True, nonempty: bool = False):
    """A config field: `min`/`max` inclusive bounds, `above`/`below` exclusive ones (numbers and list items);
    `resume=False` for keys that do not change what training computes; `nonempty` for lists and strings."""
    meta = {k: v for k, v in dict(min=min, max=max, above=above, below=below).items() if v is not None}
    meta.update(resume=resume, nonempty=nonempty)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PathsConfig:
    data_dir: str = setting("data", resume=False)  # downloads, extracted raw data, the index (never modified)
    cache_dir: str = setting("cache", resume=False)  # resized-image and feature caches, keyed by their settings
    runs_dir: str = setting("runs", resume=False)  # one folder per training run
    submissions_dir: str = setting("submissions", resume=False)  # every submission, <run>-<timestamp>.csv
    submission: str = setting("submission.csv", resume=False)  # the latest checked submission (`make upload`)
    kernels_dir: str = setting("kernels", resume=False)  # `kit kernel push` bundles and what came back


@dataclass
class CompetitionConfig:
    slug: str = setting("dogs-vs-cats-redux-kernels-edition", nonempty=True)  # Kaggle slug, or your dataset's name
    layout: Literal["kaggle-flat", "folder"] = setting("kaggle-flat")  # train/cat.N.jpg | a sub-folder per class
    folder: str = setting("")  # layout=folder: the folder holding one sub-folder per class
    classes: list[str] = setting(["cat", "dog"], nonempty=True)  # kaggle-flat; the last = the positive label
    kaggle_input: str = setting("/kaggle/input", resume=False)  # where a Kaggle Notebook mounts the data


@dataclass
class DataConfig:
    image_size: int = setting(224, min=8, max=1024)
    val_fraction: float = setting(0.2, above=0.0, max=0.9)  # > 0: training keeps the best epoch by validation
    seed: int = setting(42, min=0)
    batch_size: int = setting(32, min=1, max=65536)
    cache: Literal["disk", "memory", "none"] = setting("disk", resume=False)  # where resized images wait (same pixels)
    limit_per_class: int = setting(0, min=0)  # at most this many training images per class (0 = all)
    workers: int = setting(0, min=0, resume=False)  # processes for checking images (0 = all cores)


@dataclass
class AugmentConfig:
    enabled: bool = setting(True)
    engine: Literal["fused", "keras_cv"] = setting("fused")  # fused: flip+rotation+zoom in one warp
    flip: bool = setting(True)  # side-on photos: a horizontal flip is still a cat
    rotation_degrees: float = setting(10.0, min=0.0, max=180.0)
    zoom: float = setting(1.1, min=1.0, max=4.0)  # zoom in up to this factor
    brightness: float = setting(0.1, min=0.0, max=1.0)  # fraction of the value range
    contrast: float = setting(0.1, min=0.0, max=1.0)


@dataclass
class ModelConfig:
    backbone: BACKBONE_NAMES = setting("mobilenet_v2")
    weights: str = setting("imagenet", nonempty=True)  # imagenet | none | path to a weights file
    pooling: Literal["avg", "max", "avg_max"] = setting("avg")  # avg_max: both, concatenated
    dropout: float = setting(0.2, min=0.0, below=1.0)
    dense_units: int = setting(0, min=0)  # a hidden layer in the head (0 = none)
    freeze_batchnorm: bool = setting(True)  # keep the backbone's BatchNorm in inference mode when unfrozen


@dataclass
class TrainConfig:
    run_name: str = setting("", resume=False)  # empty: <config name>-<timestamp>
    resume: bool = setting(True, resume=False)  # continue the newest unfinished run of this config
    head: Literal["images", "features"] = setting("images")  # stage 1 on augmented images or on cached features
    head_epochs: int = setting(2, min=0)  # stage 1, backbone frozen (0 = none)
    # head=features: adam = SGD on the head for head_epochs; logistic = solved exactly (kit/train/logistic.py);
    # auto: logistic for a head-only run, adam for the head that fine-tuning starts from
    head_solver: Literal["adam", "logistic", "auto"] = setting("adam")
    logistic_c: float = setting(0.0, min=0.0)  # head_solver=logistic: inverse L2 strength (0 = chosen by CV)
    head_lr: float = setting(1e-3, above=0.0)
    finetune_epochs: int = setting(3, min=0)  # stage 2, backbone unfrozen (0 = a head-only run)
    lr: float = setting(1e-3, above=0.0)  # the top group's rate in stage 2
    group_lr_ratios: list[float] = setting([0.01, 0.1, 1.0], min=0.0, nonempty=True)  # lowest group .. head
    cycle_epochs: float = setting(1.0, above=0.0)  # SGDR: length of the first cycle
    cycle_mult: float = setting(2.0, above=0.0)  # SGDR: each cycle this many times longer than the last
    warmup_epochs: float = setting(0.0, min=0.0)
    weight_decay: float = setting(0.0, min=0.0)
    label_smoothing: float = setting(0.0, min=0.0, below=1.0)
    jit_compile: Auto = setting("auto", resume=False)  # auto: on with a GPU/TPU or on JAX, off on a CPU (BENCHMARKS.md, 3)
    mixed_precision: Auto = setting("auto")  # auto: mixed_float16 on a GPU, mixed_bfloat16 on a TPU, else float32
    feature_passes: int = setting(0, min=0, max=100)  # head=features: augmented passes cached as features too
    folds: int = setting(0, min=0, max=20)  # head=features: k heads on k folds, averaged (kit/train/folds.py); 0 = one
    feature_image_size: int = setting(0, min=0, max=1024)  # a head-only run's image size (0 = data.image_size)
    feature_pooling: Literal["", "avg", "max", "avg_max"] = setting("")  # a head-only run's model.pooling ("": same)
    refit_all: Auto = setting(False)  # then again on train + validation (kit/train/refit.py); auto: head-only runs
    members: list[str] = setting([])  # more models on the split, averaged by submit (kit/train/members.py)
    feature_engine: Literal["auto", "tflite", "keras"] = setting("auto")  # kit/model/engine.py
    # auto: TensorFlow's mirrored on 2+ GPUs, JAX's data_parallel on 2+ devices (kit/model/device.py)
    distribute: Literal["auto", "none", "mirrored", "data_parallel"] = setting("auto", resume=False)
    plan: bool = setting(True, resume=False)  # train and submit start with `kit plan`'s lines (a cached probe)


@dataclass
class SubmitConfig:
    run: str = setting("", resume=False)  # run folder or name to predict with (empty: the newest)
    tta: list[TTA_SETTING] = setting(["original", "hflip"], nonempty=True, resume=False)
    calibrate: Literal["auto", "none", "clip", "temperature"] = setting("auto", resume=False)  # kit/model/calibrate.py
    snapshots: Literal["auto", "best", "last_k"] = setting("auto", resume=False)  # kit/model/ensemble.py
    snapshot_k: int = setting(2, min=1, max=100, resume=False)  # submit.snapshots=last_k: how many
    refit: bool = setting(True, resume=False)  # predict the test set with the run's refit when it has one
    members: bool = setting(True, resume=False)  # average the run's train.members with it
    member_weights: Literal["equal", "auto"] = setting("equal", resume=False)  # auto: chosen on validation
    clip: float = setting(1e-4, min=0.0, below=0.5, resume=False)  # the floor: [clip, 1 - clip], after calibrating
    message: str = setting("", resume=False)


@dataclass
class LrFindConfig:
    stage: Literal["head", "finetune"] = setting("head", resume=False)
    start_lr: float = setting(1e-6, above=0.0, resume=False)
    end_lr: float = setting(1.0, above=0.0, resume=False)
    steps: int = setting(100, min=10, max=100000, resume=False)
    smoothing: float = setting(0.98, min=0.0, below=1.0, resume=False)  # exponential smoothing of the loss
    diverge: float = setting(4.0, above=1.0, resume=False)  # stop when the smoothed loss exceeds this x its min


@dataclass
class ExportConfig:
    formats: list[EXPORT_FORMATS] = setting(["keras", "saved_model", "tflite", "tflite_float16"], nonempty=True, resume=False)
    tolerance: float = setting(1e-4, above=0.0, resume=False)  # max |exported - keras| probability, float32
    tolerance_quantized: float = setting(2e-2, above=0.0, resume=False)  # the same for float16 / int8 weights


@dataclass
class KernelConfig:
    owner: str = setting("", resume=False)  # your Kaggle user name (empty: the one your credentials sign in as)
    slug: str = setting("", resume=False)  # the kernel's slug (empty: kit-<config name>)
    accelerator: Literal["gpu", "tpu", "cpu"] = setting("gpu", resume=False)  # gpu: T4 x2; tpu: v5e-8 on JAX
    wait_minutes: float = setting(720.0, above=0.0, resume=False)  # `kit kernel status` polls this long at most,
    poll_seconds: float = setting(30.0, min=1.0, resume=False)  # at most this long between two calls


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
    kernel: KernelConfig = field(default_factory=KernelConfig)
    name: str = "default"  # set from the config file's name


REPLACED = {
    "train.precompute": "a head-only run on cached features is train.head=features with train.finetune_epochs=0",
    "train.head_on_features": "stage 1 on cached features is train.head=features",
    "train.head_precompute_epochs": "stage 1's epochs are train.head_epochs, on images or on features",
    "train.precompute_passes": "augmented feature passes are train.feature_passes",
    "train.precompute_image_size": "a head-only run's image size is train.feature_image_size",
}


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at `path`, then `section.key=value` overrides, every value checked."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise KitError(f"config file {path} not found: pass an existing file, e.g. configs/demo.yaml")
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise KitError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        merge(cfg, data, str(path))
        cfg.name = path.stem
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise KitError(f"override {item!r} must look like section.key=value, e.g. data.image_size=160")
        set_key(cfg, key.strip(), raw, "--set", text=True)
    check_consistency(cfg)
    return cfg


def merge(cfg: Config, data: dict, source: str) -> None:
    for section, values in data.items():
        if section == "name":
            raise KitError(f"config key 'name' in {source} is set from the file name; remove it")
        if not isinstance(values, dict):
            raise KitError(f"config section '{section}' in {source} must be a mapping of keys")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value, source)


@functools.lru_cache(maxsize=None)
def _type_hints(section: type) -> dict:
    """A section's field types (evaluated once: the annotations are strings under `from __future__`)."""
    return typing.get_type_hints(section)


def set_key(cfg: Config, dotted: str, value: object, source: str, text: bool = False) -> None:
    """Set one key, checked; `text`: value is a --set string (kit/config_values.py)."""
    section, _, key = dotted.partition(".")
    if dotted in REPLACED:
        raise KitError(f"config key '{dotted}' ({source}) was replaced: {REPLACED[dotted]}")
    sections = [f.name for f in dataclasses.fields(cfg) if f.name != "name"]
    if section not in sections:
        raise KitError(f"unknown config section '{section}' ({source}): known sections are {', '.join(sections)}")
    target = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise KitError(f"unknown config key '{dotted}' ({source}): known keys in {section} are {', '.join(fields)}")
    kind = _type_hints(type(target))[key]
    setattr(target, key, coerce(dotted, value, kind, fields[key].metadata, source, text))


def check_consistency(cfg: Config) -> None:
    """Rules between keys, each one line naming them."""
    if cfg.lr_find.start_lr >= cfg.lr_find.end_lr:
        raise KitError(f"lr_find.start_lr ({cfg.lr_find.start_lr:g}) must be below lr_find.end_lr "
                       f"({cfg.lr_find.end_lr:g}): the range test sweeps from one to the other")
    t = cfg.train
    if t.head_epochs + t.finetune_epochs < 1:
        raise KitError("nothing to train: set train.head_epochs or train.finetune_epochs above 0")
    if t.head == "features" and t.head_epochs < 1:
        raise KitError("train.head=features trains stage 1 on cached features for train.head_epochs: "
                       "set train.head_epochs above 0, or train.head=images")
    if t.feature_passes and not cfg.augment.enabled:
        raise KitError("train.feature_passes > 0 needs augmentation: set augment.enabled=true "
                       "or train.feature_passes=0")
    if t.folds == 1 or (t.folds > 1 and t.head != "features"):
        raise KitError(f"train.folds={t.folds} trains that many heads on cached features and averages them: use 2 "
                       "or more with train.head=features, or train.folds=0 for one head")
    if t.head_solver == "logistic" and (t.head != "features" or cfg.model.dense_units):
        raise KitError("train.head_solver=logistic solves one Dense layer on cached features: set train.head=features "
                       "and model.dense_units=0, or train.head_solver=adam")
    if "auto" in cfg.submit.tta and len(cfg.submit.tta) > 1:
        raise KitError(f"submit.tta={list(cfg.submit.tta)}: auto picks the views itself (hflip only for a model trained "
                       "on mirrored pictures): use submit.tta=[auto] alone, or list the views")
    if t.feature_passes and t.head != "features":
        raise KitError(f"train.feature_passes={t.feature_passes} adds augmented passes of cached features: "
                       "set train.head=features, or train.feature_passes=0")
    if 0 < t.feature_image_size < 32:
        raise KitError(f"config key 'train.feature_image_size' must be 0 (use data.image_size) or at least 32, "
                       f"got {t.feature_image_size}")
    if len(set(cfg.competition.classes)) != len(cfg.competition.classes) or len(cfg.competition.classes) < 2:
        raise KitError(f"config key 'competition.classes' must name at least two different classes, "
                       f"got {cfg.competition.classes}")


def resume_keys() -> list[str]:
    """The dotted keys whose change makes an unfinished run impossible to resume (declared on each field)."""
    cfg = Config()
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(cfg) if section.name != "name"
            for f in dataclasses.fields(getattr(cfg, section.name)) if f.metadata.get("resume", True)]


def saved_config(data: dict, strict: bool = True) -> Config:
    """A run's saved config.yaml as a Config: keys it lacks take today's defaults (a key added since the run
    was saved does not stop it resuming), keys no longer known are ignored, values are checked as at load;
    `strict=False` keeps a value that no longer passes as saved, so that it compares as changed."""
    cfg = Config()
    for section, values in (data or {}).items():
        for key, value in (values.items() if isinstance(values, dict) else ()):
            target = getattr(cfg, section, None) if section != "name" else None
            if not dataclasses.is_dataclass(target) or key not in {f.name for f in dataclasses.fields(target)}:
                continue
            try:
                set_key(cfg, f"{section}.{key}", value, "the run's config.yaml")
            except KitError:
                if strict:
                    raise
                setattr(target, key, value)
    return cfg


def changed_for_resume(saved: dict, cfg: Config) -> list[str]:
    """The keys that matter for resuming whose values differ between a run's saved config and `cfg`."""
    before, now = config_dict(saved_config(saved, strict=False)), config_dict(cfg)
    changed = []
    for dotted in resume_keys():
        section, key = dotted.split(".")
        if before[section][key] != now[section][key]:
            changed.append(dotted)
    return changed


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
