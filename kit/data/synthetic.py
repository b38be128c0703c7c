"""A small synthetic competition in Kaggle's exact zip shape, for `make demo` and the tests.

    python -c "from kit.data.synthetic import make_competition_zip; make_competition_zip('comp.zip')"
    python -m kit demo --config configs/demo.yaml      # makes one under demo/data/synthetic/ and uses it

Cats are round blobs with horizontal stripes, dogs square blobs with vertical stripes, on noisy
backgrounds of random colour: a small CNN (and a pretrained one) learns them in seconds, and the
side-on augmentation (flip, ±10° rotation, zoom) keeps the label.
The outer zip holds train.zip (train/cat.N.jpg, train/dog.N.jpg), test.zip (test/<id>.jpg) and
sample_submission.csv, like the real download. The hidden test labels are written beside it.
`make_folder_dataset` writes a folder-per-class dataset (three or more classes) the same way.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kit.fsutil import atomic_path

CLASSES = ("cat", "dog")


def draw_image(label: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One picture: a round, horizontally striped (cat, 0) or square, vertically striped (dog, 1) blob."""
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    radius = int(rng.integers(size // 6, size // 3))
    cx, cy = rng.integers(radius, size - radius, 2)
    box = (int(cx - radius), int(cy - radius), int(cx + radius), int(cy + radius))
    colour = tuple(int(c) for c in (255 - background + rng.integers(-30, 30, 3)) % 256)
    (draw.ellipse if label == 0 else draw.rectangle)(box, fill=colour)
    stripes = np.asarray(image).copy()
    period = int(rng.integers(4, 7))
    lines = (np.arange(size) // (period // 2)) % 2 == 0
    mask = np.zeros((size, size), bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    mask &= lines[:, None] if label == 0 else lines[None, :]
    stripes[mask] = stripes[mask] // 3
    return Image.fromarray(stripes)


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _inner_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as inner:
        for name, data in members.items():
            inner.writestr(name, data)
    return buffer.getvalue()


def make_competition_zip(out: str | Path, train_per_class: int = 150, n_test: int = 100,
                         size: int = 64, seed: int = 0, extra_train: dict[str, bytes] | None = None) -> Path:
    """Write the synthetic competition zip at `out` (and `<out>.test_labels.csv`); return `out`.

    `extra_train` adds members to train.zip as given (name -> bytes), e.g. broken files.
    """
    rng = np.random.default_rng(seed)
    train = {f"train/{name}.{i}.jpg": jpeg_bytes(draw_image(label, rng, size))
             for label, name in enumerate(CLASSES) for i in range(train_per_class)}
    train.update(extra_train or {})
    test_labels = rng.integers(0, 2, n_test)
    test = {f"test/{i + 1}.jpg": jpeg_bytes(draw_image(int(label), rng, size))
            for i, label in enumerate(test_labels)}
    sample = "id,label\n" + "".join(f"{i + 1},0.5\n" for i in range(n_test))
    out = Path(out)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as outer:
        outer.writestr("train.zip", _inner_zip(train))
        outer.writestr("test.zip", _inner_zip(test))
        outer.writestr("sample_submission.csv", sample)
    labels = "id,label\n" + "".join(f"{i + 1},{int(v)}\n" for i, v in enumerate(test_labels))
    out.with_name(out.name + ".test_labels.csv").write_text(labels)
    return out


FOLDER_SHAPES = ("ellipse", "rectangle", "triangle")
FOLDER_PATTERNS = ("horizontal", "vertical", "checks")  # all unchanged by a horizontal flip


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    left, top, right, bottom = box
    if shape == "triangle":  # apex up: symmetric, so a flipped triangle is still a triangle
        draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)
    else:
        (draw.ellipse if shape == "ellipse" else draw.rectangle)(box, fill=fill)


def draw_class_image(label: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One picture of class `label` (0..8): a shape and a stripe pattern, both kept by flip and small rotations.

    Class k gets shape k % 3 and pattern (k + k // 3) % 3, so classes 0-2 differ in both and up to nine
    classes are all distinct combinations.
    """
    if not 0 <= label < len(FOLDER_SHAPES) * len(FOLDER_PATTERNS):
        raise ValueError(f"draw_class_image draws classes 0..8, got {label}")
    shape, pattern = FOLDER_SHAPES[label % 3], FOLDER_PATTERNS[(label + label // 3) % 3]
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    radius = int(rng.integers(size // 4, size // 3 + 1))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    colour = tuple(int(c) for c in (255 - background + rng.integers(-30, 30, 3)) % 256)
    mask = Image.new("L", (size, size))
    _draw_shape(ImageDraw.Draw(mask), shape, box, 255)
    half = int(rng.integers(4, 7)) // 2
    on = (np.arange(size) // half) % 2 == 0
    lines = {"horizontal": on[:, None] & np.ones(size, bool)[None, :],
             "vertical": np.ones(size, bool)[:, None] & on[None, :],
             "checks": on[:, None] ^ on[None, :]}[pattern]
    inside = np.asarray(mask) > 0
    pixels[inside] = colour
    pixels[inside & lines] //= 4
    return Image.fromarray(pixels)


def make_folder_dataset(out: str | Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 60,
                        size: int = 64, seed: int = 0, test: int = 0) -> Path:
    """A folder-per-class dataset at `out` (`<class>/<n>.jpg`); return `out`. Written to a temp name, renamed.

    With `test` > 0 it also holds `test/<id>.jpg` (ids: 10 hex digits, like many Kaggle datasets) and
    `sample_submission.csv` (`id,<class 1>,...` with uniform probabilities), and the hidden test labels
    go beside the folder in `<out>.test_labels.csv` (id, label, class_name).
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    test_labels = rng.integers(0, len(classes), test)
    ids = [f"{int(v):010x}" for v in rng.choice(16 ** 10, size=test, replace=False)] if test else []
    with atomic_path(out) as tmp:
        for label, name in enumerate(classes):
            (tmp / name).mkdir(parents=True)
            for i in range(per_class):
                (tmp / name / f"{i}.jpg").write_bytes(jpeg_bytes(draw_class_image(label, rng, size)))
        if test:
            (tmp / "test").mkdir()
            for image_id, label in zip(ids, test_labels):
                (tmp / "test" / f"{image_id}.jpg").write_bytes(jpeg_bytes(draw_class_image(int(label), rng, size)))
            uniform = ",".join([f"{1 / len(classes):.6f}"] * len(classes))
            (tmp / "sample_submission.csv").write_text(
                f"id,{','.join(classes)}\n" + "".join(f"{image_id},{uniform}\n" for image_id in ids))
    if test:
        rows = "".join(f"{image_id},{int(label)},{classes[int(label)]}\n" for image_id, label in zip(ids, test_labels))
        out.with_name(out.name + ".test_labels.csv").write_text("id,label,class_name\n" + rows)
    return out
