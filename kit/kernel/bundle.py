"""The folder `kit kernel push` uploads: two datasets (kit's code, the Keras weights) and a script kernel.

    python -m kit kernel push --dry-run --config configs/dogs-vs-cats-redux.yaml   # writes it, pushes nothing

    kernels/<slug>/bundle/code/       kit-<version>-py3-none-any.whl + dataset-metadata.json   (<owner>/kit-code)
    kernels/<slug>/bundle/weights/    the weight files this config loads + metadata            (<owner>/kit-weights)
    kernels/<slug>/bundle/kernel/     kit_kernel.py (kit/kernel/script.py, SETTINGS filled) + kernel-metadata.json
    kernels/<slug>/bundle/bundle.json what was built: refs, digests, files, sizes
    (kernels/<slug>/push.json and output/ are kit/kernel/kernel.py's: a new bundle leaves them alone)

Each dataset's digest is the sha256 of its files (names and bytes); `kit kernel push` uploads it again only
when the digest differs from the one it last uploaded (kit/kernel/remote.py). The kernel's config is the
resolved config, less the keys Notebook mode sets (paths.*, competition.kaggle_input), embedded in the script.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

import kit
from kit.config import Config, config_dict
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.kernel import script as script_template
from kit.kernel.wheel import build_wheel
from kit.provenance import git_commit

SCRIPT_NAME = "kit_kernel.py"
SETTINGS_LINE = "SETTINGS: dict = {}  # filled in by kit.kernel.bundle (this line is replaced)"
STAGES = ["download", "train", "submit"]
MACHINE = {"gpu": "NvidiaTeslaT4", "tpu": "TpuV5E8", "cpu": None}  # NvidiaTeslaT4 is two T4s; P100 is retired
# The Keras backend each machine's stages run on: Kaggle's TPU image has tensorflow-cpu and jax[tpu], and only
# JAX reaches the TPU (kit/model/backend.py); there train.distribute=auto is DataParallel over its 8 cores.
BACKEND = {"gpu": "tensorflow", "tpu": "jax", "cpu": "tensorflow"}
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{3,48}[a-z0-9]$")  # Kaggle's slugs: 5-50 of a-z, 0-9 and '-'
NOTEBOOK_KEYS = ("paths", "competition.kaggle_input")  # set by Notebook mode inside the kernel, not by us


@dataclass
class Dataset:
    ref: str  # owner/slug
    title: str
    folder: Path
    files: list[str] = field(default_factory=list)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 over the files' names and bytes (not the metadata): what decides a new upload."""
        total = hashlib.sha256()
        for name in sorted(self.files):
            total.update(name.encode() + b"\0" + hashlib.sha256((self.folder / name).read_bytes()).digest())
        return total.hexdigest()

    def size(self) -> int:
        return sum((self.folder / name).stat().st_size for name in self.files)


@dataclass
class Bundle:
    folder: Path
    kernel_ref: str
    kernel_folder: Path
    datasets: list[Dataset]
    accelerator: str


def kernel_slug(cfg: Config) -> str:
    slug = cfg.kernel.slug or re.sub(r"[^a-z0-9]+", "-", f"kit-{cfg.name}".lower()).strip("-")
    if not SLUG.match(slug):
        raise KitError(f"kernel slug {slug!r} is not a Kaggle slug (5-50 of a-z, 0-9 and '-', no '-' at the ends): "
                       f"set kernel.slug, e.g. kernel.slug=kit-dogs-vs-cats")
    return slug


def kernel_config(cfg: Config) -> dict:
    """The resolved config as the kernel gets it: without the keys Notebook mode points at /kaggle."""
    data = config_dict(cfg)
    data.pop("name", None)
    data.pop("paths", None)
    data["competition"].pop("kaggle_input", None)
    if cfg.model.weights not in ("imagenet", "none"):
        data["model"]["weights"] = "imagenet"  # the script passes the attached file's path with --set
    return data


def script_text(cfg: Config, wheel: str, weights_file: str, pushed: str, accelerator: str = "gpu") -> str:
    """kit/kernel/script.py with its SETTINGS line replaced by this config's settings."""
    template = Path(script_template.__file__).read_text()
    if template.count(SETTINGS_LINE) != 1:
        raise AssertionError(f"{script_template.__file__} must hold the line {SETTINGS_LINE!r} once")
    settings = {"config_name": cfg.name, "config_yaml": yaml.safe_dump(kernel_config(cfg), sort_keys=False),
                "wheel": wheel, "weights_file": weights_file, "stages": STAGES, "pushed": pushed,
                "kit": kit.__version__, "commit": git_commit(), "keras_backend": BACKEND[accelerator]}
    return template.replace(SETTINGS_LINE, f"SETTINGS: dict = {json.dumps(settings, indent=4)}")


def kernel_metadata(cfg: Config, ref: str, datasets: list[Dataset], accelerator: str) -> dict:
    """kernel-metadata.json; every switch set explicitly (the client's defaults differ from its docs)."""
    meta = {"id": ref, "title": ref.split("/")[1], "code_file": SCRIPT_NAME, "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": accelerator == "gpu",
            "enable_tpu": accelerator == "tpu",
            "enable_internet": False, "dataset_sources": [d.ref for d in datasets],
            "competition_sources": [cfg.competition.slug], "kernel_sources": [], "model_sources": []}
    if MACHINE[accelerator]:
        meta["machine_shape"] = MACHINE[accelerator]
    return meta


def dataset_metadata(dataset: Dataset) -> dict:
    return {"title": dataset.title, "id": dataset.ref, "licenses": [{"name": "other"}]}


def write_dataset(dataset: Dataset, sources: list[Path]) -> Dataset:
    dataset.folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source.parent != dataset.folder:
            shutil.copyfile(source, dataset.folder / source.name)  # not the mode: a read-only source stays so
        dataset.files.append(source.name)
    write_text_atomic(dataset.folder / "dataset-metadata.json", json.dumps(dataset_metadata(dataset), indent=2) + "\n")
    return dataset


def build(cfg: Config, owner: str, accelerator: str, weight_files: list[Path], root: Path) -> Bundle:
    """Write the bundle into `root`/<slug>/bundle (a temporary folder renamed at the end: an old bundle stays
    whole until the new one is complete); return what it holds."""
    if cfg.competition.layout != "kaggle-flat":
        raise KitError("kit kernel push runs a Kaggle competition (competition.layout=kaggle-flat); for your own "
                       "folder dataset, upload it to Kaggle as a dataset and train in a notebook")
    slug = kernel_slug(cfg)
    final = Path(root) / slug / "bundle"
    pushed = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with atomic_path(final) as folder:
        folder.mkdir()
        code = Dataset(f"{owner}/kit-code", "kit code", folder / "code")
        wheel = build_wheel(code.folder)
        write_dataset(code, [wheel])
        datasets = [code]
        if weight_files:  # model.weights=none needs no second dataset
            datasets.append(write_dataset(Dataset(f"{owner}/kit-weights", "kit weights", folder / "weights"),
                                          weight_files))
        kernel_folder = folder / "kernel"
        kernel_folder.mkdir()
        own_file = weight_files[0].name if cfg.model.weights not in ("imagenet", "none") else ""
        (kernel_folder / SCRIPT_NAME).write_text(script_text(cfg, wheel.name, own_file, pushed, accelerator))
        ref = f"{owner}/{slug}"
        meta = kernel_metadata(cfg, ref, datasets, accelerator)
        (kernel_folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        summary = {"kernel": ref, "accelerator": accelerator, "config": cfg.name, "built": pushed,
                   "datasets": {d.ref: {"digest": d.digest, "files": d.files, "bytes": d.size()} for d in datasets}}
        (folder / "bundle.json").write_text(json.dumps(summary, indent=2) + "\n")
    moved = [Dataset(d.ref, d.title, final / d.folder.name, d.files) for d in datasets]
    for before, after in zip(datasets, moved):  # the same bytes, renamed: not read again
        after.digest = before.digest
    return Bundle(final, ref, final / "kernel", moved, accelerator)
