"""The bench's pictures: real mini-competition photos when there are some, else photo-sized synthetic JPEGs.

    from bench.images import synthetic_photos, real_train_photos, class_folders

Synthetic photos are ~500x375 JPEGs of smooth colour fields with a few blobs and a little noise,
so they decode and compress roughly like camera photos (a pure-noise JPEG would be far larger and
slower to decode than a real photo of the same size).
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog")


def photo(rng: np.random.Generator, width: int, height: int):
    """One photo-like picture: a two-colour gradient, blotchy texture, a few ellipses, mild sensor noise."""
    from PIL import Image, ImageDraw

    top, bottom = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32) - 128.0
    pixels = top * (1 - ramp) + bottom * ramp + 0.2 * texture + rng.integers(-4, 5, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def synthetic_photos(folder: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0,
                     quality: int = 90) -> list[Path]:
    """Write n JPEGs named like Kaggle's train set (cat.i.jpg, dog.i.jpg, alternating); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{CLASSES[i % 2]}.{i // 2}.jpg"
        if not path.exists():
            buffer = io.BytesIO()
            photo(rng, *size).save(buffer, format="JPEG", quality=quality)
            path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def real_train_photos(competition_zip: Path, folder: Path) -> list[Path]:
    """Extract train.zip's photos from the competition zip into `folder`/train; return them sorted by name."""
    with zipfile.ZipFile(competition_zip) as outer, outer.open("train.zip") as inner_file:
        with zipfile.ZipFile(inner_file) as inner:
            members = [m for m in inner.namelist() if m.lower().endswith(".jpg")]
            inner.extractall(folder, members)
    return sorted((folder / m for m in members), key=lambda p: p.name)


def take_balanced(paths: list[Path], n: int) -> list[Path]:
    """n of `paths`, half of each class, spread evenly over the sorted list (all of them if n >= len)."""
    if n >= len(paths):
        return list(paths)
    chosen = []
    for name in CLASSES:
        mine = [p for p in paths if p.name.startswith(name + ".")]
        want = n // 2 if name == CLASSES[0] else n - n // 2
        step = max(1, len(mine) // max(1, want))
        chosen += mine[::step][:want]
    return sorted(chosen, key=lambda p: p.name)


def labels_of(paths: list[Path]) -> np.ndarray:
    """(n, 1) float32 targets, dog = 1, from Kaggle-style names."""
    return np.array([[1.0 if Path(p).name.startswith("dog.") else 0.0] for p in paths], np.float32)


def class_folders(paths: list[Path], folder: Path) -> Path:
    """Symlink `paths` into folder/cat/ and folder/dog/ (what keras.utils.image_dataset_from_directory reads)."""
    if folder.exists():
        shutil.rmtree(folder)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for path in paths:
        name = Path(path).name
        (folder / name.split(".", 1)[0] / name).symlink_to(Path(path).resolve())
    return folder


def replicated_set(unique: list[Path], folder: Path, n: int) -> list[Path]:
    """n Kaggle-named symlinks (cat.i.jpg / dog.i.jpg) cycling over `unique` pictures.

    Decoding cost and every per-file cache key depend on the file, not on its content being new, so a
    few hundred distinct JPEGs stand in for thousands at a fraction of the generation time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{CLASSES[i % 2]}.{i // 2}.jpg"
        if not path.is_symlink():
            path.symlink_to(Path(unique[i % len(unique)]).resolve())
        paths.append(path)
    return paths
