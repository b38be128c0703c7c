"""Scaling: index + pixel cache + feature extraction at growing image counts, one fresh process per size.

    .venv/bin/python bench/run.py --only scaling

`make_raw(folder, unique, n)` lays out a Kaggle-flat competition of n training pictures (symlinks
cycling over a few hundred distinct JPEGs); `scale_once` runs kit's own stages on it with
`data.cache: disk` and reports each phase's time and peak memory, the anonymous part (what the
process holds) apart from the file-backed part (memory-mapped cache pages the kernel may drop).
"""
from __future__ import annotations

from pathlib import Path

from bench.common import RssSampler, timed
from bench.images import replicated_set

SLUG = "dogs-vs-cats-redux-kernels-edition"


def make_raw(data_dir: Path, unique: list[Path], n: int) -> Path:
    """data_dir/<slug>/raw/train/ with n pictures (no test folder: the data stage allows that)."""
    train = data_dir / SLUG / "raw" / "train"
    replicated_set(unique, train, n)
    return train


def phase(fn) -> tuple[object, dict]:
    with RssSampler(interval=0.02) as sampler:
        result, timing = timed(fn)
    return result, {"seconds": round(timing.seconds, 2), "cpu_seconds": round(timing.cpu_seconds, 2),
                    **sampler.result()}


def scale_once(n: int, data_dir: str, work: str, image_size: int = 224, batch_size: int = 32,
               weights: str = "none") -> dict:
    """Index, cache and features for the n-image competition under `data_dir`; each phase timed and sampled."""
    from kit.data import index as data
    from kit.data.dataset import load_index
    from kit.model import features
    from kit.data import pipeline
    from kit.config import load_config
    from kit.model.backbones import build_model, set_backbone_trainable

    cfg = load_config(None, [f"paths.data_dir={data_dir}", f"paths.cache_dir={Path(work) / f'cache-{n}'}",
                             f"data.image_size={image_size}", f"data.batch_size={batch_size}", "data.cache=disk",
                             f"model.weights={weights}", f"competition.kaggle_input={Path(work) / 'no-input'}"])
    phases = {}
    index, phases["index"] = phase(lambda: (data.run(cfg), load_index(cfg))[1])
    sets = {"train": list(index.train["path"]), "val": list(index.val["path"])}
    _, phases["cache"] = phase(lambda: [pipeline.load_images(cfg, paths, name) for name, paths in sets.items()])
    model = build_model(cfg, 2)
    set_backbone_trainable(model, False)

    def extract():
        identity = features.backbone_identity(model)
        return [features.features(cfg, model, paths, name, identity=identity) for name, paths in sets.items()]

    arrays, phases["features"] = phase(extract)
    cache_bytes = sum(p.stat().st_size for p in Path(cfg.paths.cache_dir).rglob("*.npy"))
    index_bytes = int(index.train.memory_usage(deep=True).sum() + index.val.memory_usage(deep=True).sum())
    return {"n": n, "image_size": image_size, "phases": phases,
            "seconds": round(sum(p["seconds"] for p in phases.values()), 2),
            "index_mb": round(index_bytes / 2 ** 20, 3),
            "features_mb": round(sum(a.nbytes for a in arrays) / 2 ** 20, 3),
            "cache_on_disk_mb": round(cache_bytes / 2 ** 20, 1)}
