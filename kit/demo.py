"""`make demo`: the whole chain, offline, on a generated synthetic competition.

    python -m kit demo --config configs/demo.yaml

It writes a small competition zip in Kaggle's exact shape (with two broken training files, as
real downloads sometimes have), then runs the same stages as the real thing on it:
download --from that zip, data (index, check, split), and the input pipeline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit import data, download
from kit import paths as kit_paths
from kit.config import Config
from kit.synthetic import jpeg_bytes, make_competition_zip




def synthetic_zip(cfg: Config) -> Path:
    """The demo's competition zip under data_dir/synthetic, generated once."""
    out = Path(cfg.paths.data_dir) / "synthetic" / f"{cfg.competition.slug}.zip"
    if not out.exists():
        from PIL import Image
        whole = jpeg_bytes(Image.new("RGB", (64, 64), (200, 120, 40)))
        broken = {"train/cat.9999.jpg": b"", "train/dog.9999.jpg": whole[: len(whole) // 2]}
        make_competition_zip(out, train_per_class=150, n_test=100, size=64, seed=0, extra_train=broken)
    return out


def check_pipeline(cfg: Config) -> str:
    """Build the image caches and pull one augmented batch: the data side, end to end."""
    from kit import pipeline

    index = data.load_index(cfg)
    train_images = pipeline.load_images(cfg, list(index.train["path"]), "train")
    labels = index.train["label"].to_numpy(np.float32)
    images, batch_labels = next(iter(pipeline.training_stream(cfg, train_images, labels)))
    low, high = float(images.numpy().min()), float(images.numpy().max())
    return (f"an augmented batch of {images.shape[0]} images {tuple(images.shape[1:])} float32 in "
            f"[{low:.0f}, {high:.0f}] with {int(batch_labels.numpy().sum())} dogs")


def run(cfg: Config) -> Path:
    source = synthetic_zip(cfg)
    print(f"demo: synthetic competition {source}")
    download.run(cfg, source=str(source))
    index_dir = data.run(cfg)
    summary = check_pipeline(cfg)
    index = data.load_index(cfg)
    print(f"demo: checked download (zip integrity, counts, sample ids = test ids), "
          f"{len(index.train)} train / {len(index.val)} validation / {len(index.test)} test images indexed, "
          f"{len(index.quarantine)} quarantined (see {kit_paths.index_dir(cfg) / 'quarantine.csv'}), {summary}.")
    return index_dir
